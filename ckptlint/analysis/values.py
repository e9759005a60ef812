"""Compatibility names: the evaluator lives in :mod:`ckptlint.infer` now."""

from ckptlint.infer.evaluator import Evaluator
from ckptlint.infer.lattice import Instance, literal_truth
from ckptlint.infer.scope import Env, scope_env

__all__ = ["Env", "Evaluator", "Instance", "literal_truth", "scope_env"]
