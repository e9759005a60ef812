"""CKP203 outer-container-mutation: a module-level or closure-captured container is mutated.

What: a mutating method (``LOG.append(x)``, ``.update``, ``.extend``,
``.pop``, ...), an in-place tensor op, or item assignment/deletion
(``CONFIG["k"] = v``) on a container that lives outside the checkpointed
callable: a module-level variable or a variable captured from an enclosing
function.

Why it breaks checkpointing: the container outlives the call, so the
recompute in backward mutates it a second time. Measured: appending to a
global list whose ``len()`` is read later gives wrong gradients in both
modes; changing a config dict that is re-read does too.

How to fix: collect results in a local and return them; mutate outer
containers in the caller, after the checkpoint returns.

Example::

    LOG = []
    def block(x):
        LOG.append(x.mean())   # CKP203
        return x * 2
"""

from __future__ import annotations

from typing import Iterator

import libcst as cst

from ckptlint.analysis import names as N
from ckptlint.analysis.flow import CallEvent, WriteEvent
from ckptlint.rules._common import inplace_method, written
from ckptlint.rules._idempotent import idempotent_update
from ckptlint.rules.base import Hit, RuleContext

CODE = "CKP203"
NAME = "outer-container-mutation"
MESSAGE = "{what} {scope} '{name}' {where}: the recompute in backward mutates it again; collect results locally and return them"
EVENT = "call"
EVENTS = ("call", "write")
_OUTER = ("outer", "global", "closure")


def _scope(kind: str) -> str:
    return "closure variable" if kind == "closure" else "module-level"


def check(event: CallEvent | WriteEvent, ctx: RuleContext) -> Iterator[Hit]:
    if isinstance(event, WriteEvent):
        if not isinstance(event.target, cst.Subscript) or event.root.kind not in _OUTER:
            return
        if event.memoized and not event.from_inputs:
            return  # ``if key not in _CACHE: _CACHE[key] = make(shape, device)``: the recompute finds it filled
        what = {"assign": "item assignment on", "aug": "augmented item assignment on", "del": "item deletion on"}[event.kind]
        yield Hit(event.target, MESSAGE.format(what=what, scope=_scope(event.root.kind), name=event.root.name, where=ctx.inside))
        return
    r = event.receiver
    if r is None or r.kind not in _OUTER or r.through_attribute:
        return
    if event.method == "update" and idempotent_update(event.call, ctx.function):
        return  # writes back what it reads from the same dict
    if event.method in N.CONTAINER_MUTATORS or inplace_method(event.method):
        func = event.call.func
        assert isinstance(func, cst.Attribute)
        yield Hit(
            event.call,
            MESSAGE.format(what=f"{event.method}() on", scope=_scope(r.kind), name=r.name or written(func.value), where=ctx.inside),
        )


VALID = [
    """
import torch
from torch.utils.checkpoint import checkpoint

_LUT_CACHE = {}

def codebook(device):
    lut = _LUT_CACHE.get(device)
    if lut is None:
        lut = torch.arange(16.0, device=device)
        _LUT_CACHE[device] = lut
    return lut

def block(x):
    return x * codebook(x.device)[0]

def run(x):
    return checkpoint(block, x, use_reentrant=False)
""",
    """
from torch.utils.checkpoint import checkpoint

LOG = []

def block(x):
    local = []
    local.append(x)
    return x * len(LOG)

def run(x):
    LOG.append(1)
    return checkpoint(block, x, use_reentrant=False)
""",
]

INVALID = [
    """
from torch.utils.checkpoint import checkpoint

LOG = []
CONFIG = {"scale": 1}

def block(x):
    LOG.append(x.mean())  # expect: CKP203
    CONFIG["scale"] = 2  # expect: CKP203
    return x * 2

def run(x):
    outs = []
    def inner(h):
        outs.append(h)  # expect: CKP203
        return h
    checkpoint(inner, x, use_reentrant=False)
    return checkpoint(block, x, use_reentrant=False)
""",
    """
from torch.utils.checkpoint import checkpoint

_FIRST_BATCH = {}

def block(x):
    # A fill-once cache filled from the input's values: the recompute skips the fill.
    if "mean" not in _FIRST_BATCH:
        _FIRST_BATCH["mean"] = x.mean()  # expect: CKP203
    return x - _FIRST_BATCH["mean"]

def run(x):
    return checkpoint(block, x, use_reentrant=False)
""",
]
