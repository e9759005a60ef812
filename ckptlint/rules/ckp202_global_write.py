"""CKP202 global-write: a checkpointed callable writes a ``global``/``nonlocal`` name.

What: assignment, augmented assignment or ``del`` of a name declared
``global`` or ``nonlocal`` inside a checkpointed callable or a helper it calls.

Why it breaks checkpointing: the recompute in backward runs the write a
second time; code that reads the name (in the recompute or after backward)
sees a different value than the first forward did. Measured: a global step
counter read in the body gives wrong gradients in both checkpoint modes.

How to fix: pass the value in and return the new value; update globals in
the caller, outside the checkpointed region.

Example::

    def block(x):
        global CALLS
        CALLS += 1      # CKP202
        return x * CALLS
"""

from __future__ import annotations

from typing import Iterator

from ckptlint.analysis.flow import GlobalWriteEvent
from ckptlint.rules.base import Hit, RuleContext

CODE = "CKP202"
NAME = "global-write"
MESSAGE = "writes {keyword} '{name}' {where}: the recompute in backward writes it again; pass it in and return the new value instead"
EVENT = "global"


def check(event: GlobalWriteEvent, ctx: RuleContext) -> Iterator[Hit]:
    if event.memoized and not event.from_inputs:
        return  # ``if _EXT is None: _EXT = load(...)``: the recompute finds it filled, the same value
    yield Hit(event.target, MESSAGE.format(keyword=event.keyword, name=event.name, where=ctx.inside))


VALID = [
    """
from torch.utils.checkpoint import checkpoint

_EXT = None

def _ext():
    global _EXT
    if _EXT is None:
        _EXT = {"scale": 2.0}  # built once (a compiled extension, in real code), never from inputs
    return _EXT

def block(x):
    return x * _ext()["scale"]

def run(x):
    return checkpoint(block, x, use_reentrant=False)
""",
    """
from torch.utils.checkpoint import checkpoint

SCALE = 2

def block(x):
    return x * SCALE

def run(x):
    global SCALE
    SCALE = 3
    return checkpoint(block, x, use_reentrant=False)
""",
]

INVALID = [
    """
from torch.utils.checkpoint import checkpoint

CALLS = 0

def block(x):
    global CALLS
    CALLS += 1  # expect: CKP202
    return x * CALLS

def run(x):
    return checkpoint(block, x, use_reentrant=False)
""",
]
