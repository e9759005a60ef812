"""One inference layer: what an expression may evaluate to.

Module classes and instances (with their constructor arguments), containers
with their elements, class references through defaults/partials/factories,
and the function bodies a call may run, across functions and files. Beneath
discovery and the rules: it imports neither.
"""

from ckptlint.infer.evaluator import DEFAULT_BUDGET, Evaluator
from ckptlint.infer.lattice import ClassRef, Frame, Instance, literal_truth
from ckptlint.infer.resolver import CallableRef, Ctx, Resolver
from ckptlint.infer.scope import Env, first_param, scope_env

__all__ = [
    "DEFAULT_BUDGET",
    "CallableRef",
    "ClassRef",
    "Ctx",
    "Env",
    "Evaluator",
    "Frame",
    "Instance",
    "Resolver",
    "first_param",
    "literal_truth",
    "scope_env",
]
