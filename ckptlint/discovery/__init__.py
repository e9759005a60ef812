"""What runs under checkpoint: sites (calls, inheritance) -> checked callables."""

from ckptlint.infer.resolver import CallableRef, Ctx, Resolver
from ckptlint.discovery.sites import CheckedCallable, Discovery, SiteCall

__all__ = ["CallableRef", "CheckedCallable", "Ctx", "Discovery", "Resolver", "SiteCall"]
