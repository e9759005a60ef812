"""CKP105 inplace-functional-on-input: ``F.relu(x, inplace=True)`` on a checkpoint input.

What: any call passing a truthy ``inplace=`` literal whose first argument is
an input of a checkpointed callable or an alias/view of one
(``F.relu(x, inplace=True)``, ``F.dropout(x, p, inplace=True)``).

Why it breaks checkpointing: the functional overwrites the input, so the
recompute in backward starts from the activated tensor instead of the
original one (an error under autograd's version check, or wrong gradients).

How to fix: ``x = F.relu(x)`` (``inplace=False``). This fix is safe: the
result is bound to the same name, only the caller's tensor stays intact.

Example::

    def forward(self, x):
        x = F.relu(x, inplace=True)    # CKP105
        x = F.relu(x, inplace=False)   # fine
"""

from __future__ import annotations

from typing import Iterator


from ckptlint.analysis.flow import CallEvent
from ckptlint.rules._common import first_positional, written
from ckptlint.rules.base import Hit, RuleContext, describe, edits_fix, kwarg, literal

CODE = "CKP105"
NAME = "inplace-functional-on-input"
MESSAGE = "{func}(..., inplace=True) on {subject} {where}: it overwrites the tensor the recompute in backward starts from; pass inplace=False"
EVENT = "call"


def check(event: CallEvent, ctx: RuleContext) -> Iterator[Hit]:
    arg = kwarg(event.call, "inplace")
    if arg is None or literal(arg.value) is not True or event.instances:
        return
    first = first_positional(event)
    if first is None or first[1].kind != "input":
        return
    value, root = first
    fix = edits_fix([("replace", arg.value, "False")], "pass inplace=False (safe: the result is still returned)", "safe")
    yield Hit(
        event.call,
        MESSAGE.format(func=written(event.call.func), subject=describe(root, written(value)), where=ctx.where),
        fix,
    )


VALID = [
    """
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

def block(x):
    h = x * 2
    h = F.relu(h, inplace=True)
    return F.relu(x, inplace=False)

def run(x):
    return checkpoint(block, x, use_reentrant=False)
""",
]

INVALID = [
    """
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

def block(x):
    return F.relu(x, inplace=True)  # expect: CKP105

def run(x):
    return checkpoint(block, x, use_reentrant=False)
""",
]
