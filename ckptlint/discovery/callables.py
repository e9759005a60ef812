"""Compatibility names: callable resolution lives in :mod:`ckptlint.infer.resolver` now."""

from ckptlint.infer.resolver import CallableRef, Ctx, Resolver, first_param

__all__ = ["CallableRef", "Ctx", "Resolver", "first_param"]
