"""CKP404 reentrant-under-ddp: reentrant checkpointing inside ``DistributedDataParallel(find_unused_parameters=True)``.

What: a file that wraps a model in ``DistributedDataParallel(...,
find_unused_parameters=True)`` (without ``static_graph=True``) and runs
reentrant checkpointing — a torch ``checkpoint(...)`` / ``checkpoint_sequential``
call with ``use_reentrant=True`` or without ``use_reentrant``, or transformers'
reentrant gradient checkpointing (``gradient_checkpointing_kwargs={"use_reentrant":
True}``; the 4.x default) — and transformers'
``TrainingArguments(ddp_find_unused_parameters=True, gradient_checkpointing=True)``
with reentrant checkpointing. Only what one file shows is judged (the
wrapper and the checkpoint in the same script).

Why it breaks checkpointing: the reentrant variant runs the region's
backward as a nested backward inside DDP's; with
``find_unused_parameters=True`` DDP's reducer traverses the graph and marks
parameters ready, then sees the recomputed region's parameters fire again:
``RuntimeError: Expected to mark a variable ready only once`` (or "parameter
has already been reduced"; pytorch#24005, peft#313, accelerate#389,
FocalNet#4). Parameters shared between checkpointed regions (tied weights)
trigger the same error even without ``find_unused_parameters``.

How to fix: ``use_reentrant=False`` (its recompute happens inside the one
backward, so each parameter is reduced once), or
``DistributedDataParallel(..., static_graph=True)`` (and drop
``find_unused_parameters`` if no parameter is really unused).

Example::

    model = DDP(model, device_ids=[rank], find_unused_parameters=True)   # CKP404 (with
    out = checkpoint(model.module.block, x, use_reentrant=True)          # a reentrant checkpoint)
"""

from __future__ import annotations

from typing import Iterator

import libcst as cst

from ckptlint.project import ModuleInfo
from ckptlint.rules._training_scripts import Script, keyword_value as _kwarg
from ckptlint.rules.base import Hit, RuleContext

CODE = "CKP404"
NAME = "reentrant-under-ddp"
MESSAGE = (
    "{what} with reentrant checkpointing ({how}): DDP marks the recomputed region's parameters ready "
    "twice and raises 'Expected to mark a variable ready only once'; pass use_reentrant=False, "
    "or static_graph=True"
)
EVENT = "module"
_WORDS = ("find_unused_parameters",)


def check(mod: ModuleInfo, ctx: RuleContext) -> Iterator[Hit]:
    if not any(w in mod.source for w in _WORDS):
        return
    scripts = Script.of(mod)
    if any(s.static_graph_lines for s in scripts):
        return
    reentrant = sorted({line for s in scripts for line in s.reentrant_checkpoints})
    enables = sorted({e.line for s in scripts for e in s.enables if e.reentrant is True})
    how = _how(reentrant, enables)
    for script in scripts:
        for call in script.ddp_calls:
            flag = _kwarg(call, "find_unused_parameters")
            if how and isinstance(flag, cst.Name) and flag.value == "True":
                yield Hit(call, MESSAGE.format(what="DistributedDataParallel(find_unused_parameters=True)", how=how))
        for call in script.ddp_unused_args:
            own = [e for e in script.enables if e.node is call and e.reentrant is True]
            if own or how:
                this = f"line {script._line(call)}" if own else how
                yield Hit(call, MESSAGE.format(what="ddp_find_unused_parameters=True", how=this))


def _how(reentrant: list[int], enables: list[int]) -> str:
    parts = []
    if reentrant:
        parts.append("checkpoint at line " + ", ".join(map(str, reentrant[:3])))
    if enables:
        parts.append("gradient checkpointing enabled at line " + ", ".join(map(str, enables[:3])))
    return "; ".join(parts)


VALID = [
    """
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.checkpoint import checkpoint

def train(model, x):
    ddp = DDP(model, find_unused_parameters=True)
    return checkpoint(model.block, x, use_reentrant=False)
""",
    """
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.checkpoint import checkpoint

def train(model, x):
    ddp = DDP(model, find_unused_parameters=True, static_graph=True)
    return checkpoint(model.block, x, use_reentrant=True)
""",
]

INVALID = [
    """
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.checkpoint import checkpoint

def train(model, x):
    ddp = DDP(model, find_unused_parameters=True)  # expect: CKP404
    return checkpoint(model.block, x, use_reentrant=True)
""",
    """
from transformers import TrainingArguments

args = TrainingArguments(  # expect: CKP404
    "out",
    ddp_find_unused_parameters=True,
    gradient_checkpointing=True,
    gradient_checkpointing_kwargs={"use_reentrant": True},
)
""",
]
