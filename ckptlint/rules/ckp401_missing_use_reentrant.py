"""CKP401 missing-use-reentrant: checkpoint called without an explicit ``use_reentrant``.

What: ``torch.utils.checkpoint.checkpoint(...)``,
``checkpoint_sequential(...)`` or ``functools.partial(checkpoint, ...)``
without a ``use_reentrant=`` keyword. Not flagged when the call passes
``**kwargs`` (they may carry it), nor on
``self._gradient_checkpointing_func(...)`` (its partial carries it).

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
from ckptlint.rules.base import Hit, RuleContext, kwarg, replace_node_fix

CODE = "CKP401"
NAME = "missing-use-reentrant"
MESSAGE = "{func}() without use_reentrant: PyTorch warns, runs the reentrant variant and will make this an error; pass use_reentrant=False"
EVENT = "site"


def check(site: SiteCall, ctx: RuleContext) -> Iterator[Hit]:
    if not site.torch_api:
        return
    call = site.call
    if kwarg(call, "use_reentrant") is not None:
        return
    if any(a.star == "**" for a in call.args):
        return
    args = list(call.args)
    new_comma: cst.Comma | cst.MaybeSentinel = cst.MaybeSentinel.DEFAULT
    if args:
        last = args[-1]
        # Separate the new keyword the way the previous arguments are
        # separated (one line each in a multi-line call).
        sep: cst.BaseParenthesizableWhitespace = cst.SimpleWhitespace(" ")
        if len(args) >= 2 and isinstance(args[-2].comma, cst.Comma):
            sep = args[-2].comma.whitespace_after
        if isinstance(last.comma, cst.Comma):
            new_comma = last.comma  # keep the trailing comma and what follows it
        args[-1] = last.with_changes(comma=cst.Comma(whitespace_after=sep))
    args.append(
        cst.Arg(
            keyword=cst.Name("use_reentrant"),
            value=cst.Name("False"),
            equal=cst.AssignEqual(cst.SimpleWhitespace(""), cst.SimpleWhitespace("")),
            comma=new_comma,
        )
    )
    new_call = call.with_changes(args=args)
    fix = replace_node_fix(
        call, new_call,
        "pass use_reentrant=False (unsafe: switches from the reentrant to the non-reentrant implementation)", "unsafe",
    )
    yield Hit(call, MESSAGE.format(func=site.name), fix)


VALID = [
    """
from torch.utils.checkpoint import checkpoint

def block(x):
    return x * 2

def run(x, **kwargs):
    a = checkpoint(block, x, use_reentrant=False)
    return checkpoint(block, a, **kwargs)
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
