"""CKP107 input-container-mutated: a mutating method on a caller-provided container.

What: ``state.append(h)``, ``cache.update(...)``, ``.extend``, ``.insert``,
``.pop``, ``.popitem``, ``.setdefault``, ``.clear``, ``.remove`` called on an
input of a checkpointed callable (a list, dict or cache object the caller
passed in) or on something reached from it.

Why it breaks checkpointing: the container outlives the call. The recompute
in backward runs the method a second time on the already-changed container
(a KV cache concatenated twice: shape errors in non-reentrant mode, wrong
gradients in reentrant mode).

How to fix: return the new entries and let the caller store them, or run
the cache update outside the checkpointed region. transformers'
``GradientCheckpointingLayer`` passes ``cache=None`` under checkpoint, so
``past_key_values.update(...)`` in such layers is not flagged.

Example::

    def forward(self, x, cache):
        cache.append(x)     # CKP107
        return x
"""

from __future__ import annotations

from typing import Iterator

from ckptlint.analysis import names as N
from ckptlint.analysis.flow import CallEvent
from ckptlint.rules._common import written
from ckptlint.rules.base import Hit, RuleContext, describe

CODE = "CKP107"
NAME = "input-container-mutated"
MESSAGE = "{method}() mutates {subject} {where}: the recompute in backward runs it again on the changed container; return new state instead"
EVENT = "call"


def check(event: CallEvent, ctx: RuleContext) -> Iterator[Hit]:
    if event.method not in N.CONTAINER_MUTATORS or event.receiver is None or event.receiver.kind != "input":
        return
    if event.receiver.fresh_container:  # the function's own **kwargs dict
        return
    if event.qualnames:
        return
    import libcst as cst

    assert isinstance(event.call.func, cst.Attribute)
    name = event.receiver.name or written(event.call.func.value)
    yield Hit(event.call, MESSAGE.format(method=event.method, subject=describe(event.receiver, name), where=ctx.where))


VALID = [
    """
from torch.utils.checkpoint import checkpoint

def get_max_seqlen(kwargs, name):
    return kwargs.pop(name, None)

def block(x, **kwargs):
    kwargs.setdefault("scale", 1)
    get_max_seqlen(kwargs, "max_seqlen")
    return x

def run(x, m):
    return checkpoint(block, x, max_seqlen=m, use_reentrant=False)
""",
    """
from torch.utils.checkpoint import checkpoint

def block(x):
    outs = []
    outs.append(x)
    return outs[0]

def run(x):
    return checkpoint(block, x, use_reentrant=False)
""",
]

INVALID = [
    """
from torch.utils.checkpoint import checkpoint

def block(x, state, cache):
    state.append(x)  # expect: CKP107
    cache.update({"k": x})  # expect: CKP107
    return x

def run(x, s, c):
    return checkpoint(block, x, s, c, use_reentrant=False)
""",
]
