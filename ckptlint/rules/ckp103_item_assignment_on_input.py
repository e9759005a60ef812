"""CKP103 item-assignment-on-input: ``x[i] = v`` on an input or something reached from it.

What: item or slice assignment, augmented item assignment or ``del x[k]`` on
a checkpoint input, an alias/view of one, or a container reached from one:
``x[:, 0] = 0``, ``state[0][...] = h`` (RWKV-style state lists),
``cache["k"] = v`` (video VAE feature caches).

Why it breaks checkpointing: the write lands in the caller's tensor or
container, which checkpoint keeps as the input of the recompute. The rerun
in backward sees the written values (wrong gradients) or a different
container (shape/count errors in non-reentrant mode).

How to fix: build a new tensor (``x = x.clone(); x[:, 0] = 0`` or
``torch.where``/``index_put``) and return new state instead of writing into
the caller's container.

Example::

    def forward(self, x, state):
        state[0][...] = x     # CKP103
        return x, [x]         # return the new state instead
"""

from __future__ import annotations

from typing import Iterator

import libcst as cst

from ckptlint.analysis.flow import WriteEvent
from ckptlint.rules._common import written
from ckptlint.rules.base import Hit, RuleContext, describe

CODE = "CKP103"
NAME = "item-assignment-on-input"
MESSAGE = "{kind} on {subject} {where}: the recompute in backward sees the written values; build a new tensor/container instead"
EVENT = "write"


def check(event: WriteEvent, ctx: RuleContext) -> Iterator[Hit]:
    if not isinstance(event.target, cst.Subscript) or event.root.kind != "input" or event.root.fresh_container:
        return
    kind = {"assign": "item assignment", "aug": "augmented item assignment", "del": "item deletion"}[event.kind]
    base = event.target.value
    name = written(base)
    root_name = event.root.name or name
    yield Hit(event.target, MESSAGE.format(kind=kind, subject=describe(event.root, root_name), where=ctx.where))


VALID = [
    """
from torch.utils.checkpoint import checkpoint

def block(x):
    y = x.clone()
    y[:, 0] = 0
    out = {}
    out["h"] = y
    return y

def run(x):
    return checkpoint(block, x, use_reentrant=False)
""",
]

INVALID = [
    """
from torch.utils.checkpoint import checkpoint

def block(x, state, cache):
    x[:, 0] = 0  # expect: CKP103
    state[0][...] = x  # expect: CKP103
    cache["feat"] = x  # expect: CKP103
    del cache["old"]  # expect: CKP103
    return x

def run(x, s, c):
    return checkpoint(block, x, s, c, use_reentrant=False)
""",
]
