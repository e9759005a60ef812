"""CKP401 missing-use-reentrant: checkpoint called without an explicit ``use_reentrant``.

What: ``torch.utils.checkpoint.checkpoint(...)``,
``checkpoint_sequential(...)`` or ``functools.partial(checkpoint, ...)``
without a ``use_reentrant=`` keyword. Not flagged when the call passes
``**kwargs`` (they may carry it), nor on
``self._gradient_checkpointing_func(...)`` (its partial carries it), nor on a
branch that only runs on torch < 1.11, which has no ``use_reentrant``: the
``else:`` of ``if is_torch_version(">=", "1.11.0")``,
``version.parse(torch.__version__) < version.parse("1.11")``,
``_TORCH_GREATER_EQUAL_1_11``-style flags, ``"use_reentrant" in
inspect.signature(checkpoint).parameters`` (see docs/linter.md for the
recognised guards). A guard for a later release (``>= "2.1"``) does not
exempt its ``else:`` branch: torch 1.11-2.0 warn there too.

Why it breaks checkpointing: PyTorch warns on every such call, runs the old
*reentrant* variant, and has announced that omitting the argument will
become an error. The two variants differ in behaviour users notice: the
reentrant one gives parameters no gradient when no input requires grad,
rejects keyword arguments, and does not support ``torch.autograd.grad``.

How to fix: pass ``use_reentrant=False`` (recommended by PyTorch) — or
``True`` if you rely on the reentrant behaviour. The autofix adds
``use_reentrant=False``; it is marked unsafe because it switches variants.

Example::

    out = checkpoint(self.block, x)                        # CKP401
    out = checkpoint(self.block, x, use_reentrant=False)   # fine
"""

from __future__ import annotations

from typing import Iterator

import libcst as cst

from ckptlint.discovery.sites import SiteCall
from ckptlint.project import ModuleInfo
from ckptlint.rules._torch_guards import legacy_only
from ckptlint.rules.base import Hit, RuleContext
from ckptlint.types import Edit, Fix

CODE = "CKP401"
NAME = "missing-use-reentrant"
MESSAGE = "{func}(){of} without use_reentrant: PyTorch warns, runs the reentrant variant and will make this an error; pass use_reentrant=False"
EVENT = "site"


def check(site: SiteCall, ctx: RuleContext) -> Iterator[Hit]:
    if not site.torch_api:
        return
    call = site.call
    if site.option("use_reentrant") is not None:  # written here, or bound by a partial or a patch
        return
    if any(a.star == "**" for a in call.args):
        return
    if legacy_only(site.module, _outermost_fn(site), call):
        return  # the else-branch of ``is_torch_version(">=", "1.11")``: no use_reentrant there
    fix = _fix(call) if call.args else None
    yield Hit(call, MESSAGE.format(func=site.name, of=ctx.of_callable), fix)


def _outermost_fn(site: SiteCall) -> cst.CSTNode | None:
    """The outermost function around the site (a guard may sit outside a closure holding the call)."""
    ctx, fn = site.ctx, site.ctx.fn
    while ctx.outer is not None:
        ctx = ctx.outer
        fn = ctx.fn or fn
    return fn


def _fix(call: cst.Call):  # -> FixBuilder
    """Insert ``use_reentrant=False`` after the last argument, in the call's own layout."""
    last = call.args[-1]

    def build(mod: ModuleInfo) -> Fix | None:
        end = mod.position(last.value)
        if end is None:
            return None
        line, col = end.end.line, end.end.column
        if isinstance(last.comma, cst.Comma):
            # Keep the trailing comma and the line structure: ``    x,`` -> ``    x, use_reentrant=False,``.
            comma = mod.position(last.comma)
            if comma is None:
                return None
            line, col = comma.end.line, comma.end.column
            text = " use_reentrant=False,"
        else:
            text = ", use_reentrant=False"
        return Fix(
            "pass use_reentrant=False (unsafe: switches from the reentrant to the non-reentrant implementation)",
            "unsafe",
            (Edit(line, col, line, col, text),),
        )

    return build


VALID = [
    """
from torch.utils.checkpoint import checkpoint

def block(x):
    return x * 2

def run(x, **kwargs):
    a = checkpoint(block, x, use_reentrant=False)
    return checkpoint(block, a, **kwargs)
""",
    """
from torch.utils.checkpoint import checkpoint
from diffusers.utils import is_torch_version

def block(x):
    return x * 2

def run(x):
    if is_torch_version(">=", "1.11.0"):
        return checkpoint(block, x, use_reentrant=False)
    else:
        return checkpoint(block, x)
""",
]

INVALID = [
    """
from functools import partial
import torch.utils.checkpoint
from torch.utils.checkpoint import checkpoint_sequential

def block(x):
    return x * 2

def run(x, seq):
    a = torch.utils.checkpoint.checkpoint(block, x)  # expect: CKP401
    fn = partial(torch.utils.checkpoint.checkpoint, preserve_rng_state=True)  # expect: CKP401
    return checkpoint_sequential(seq, 2, a)  # expect: CKP401
""",
]
