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

Second shape, without ``find_unused_parameters``: a module whose parameters run in more than
one reentrant backward per step (``rules/_shared_params.py``: the same member checkpointed in a
loop, at two calls, or checkpointed and also called directly; two members with tied weights), in
a file that runs under DDP — it wraps the model itself or a training script in the tree that does
imports it (``rules/_ddp_scope.py``); ``static_graph=True`` there is the fix, not a finding.

Why it breaks checkpointing: the reentrant variant runs the region's
backward as a nested backward inside DDP's; with
``find_unused_parameters=True`` DDP's reducer traverses the graph and marks
parameters ready, then sees the recomputed region's parameters fire again:
``RuntimeError: Expected to mark a variable ready only once`` (or "parameter
has already been reduced"; pytorch#24005, peft#313, accelerate#389,
FocalNet#4). Parameters shared between checkpointed regions (tied weights)
trigger the same error even without ``find_unused_parameters``: each reentrant backward
accumulates into ``.grad`` and fires DDP's hook on its own (measured on 1 and 2 gloo processes:
``tests/runtime/test_ddp_reentrant.py``).

How to fix: ``use_reentrant=False`` (its recompute happens inside the one
backward, so each parameter is reduced once), or
``DistributedDataParallel(..., static_graph=True)`` (and drop
``find_unused_parameters`` if no parameter is really unused).

Example::

    model = DDP(model, device_ids=[rank], find_unused_parameters=True)   # CKP404 (with
    out = checkpoint(model.module.block, x, use_reentrant=True)          # a reentrant checkpoint)

    for _ in range(self.depth):                                          # CKP404 (when a DDP script
        x = checkpoint(self.shared, x, use_reentrant=True)               # imports this model)
"""

from __future__ import annotations

from typing import Iterator

import libcst as cst

from ckptlint.project import ModuleInfo
from ckptlint.rules._ddp_scope import ddp_wrap_for
from ckptlint.rules._shared_params import shared_uses
from ckptlint.rules._training_scripts import Script, keyword_value as _kwarg
from ckptlint.rules.base import Hit, RuleContext

CODE = "CKP404"
NAME = "reentrant-under-ddp"
MESSAGE = (
    "{what} with reentrant checkpointing ({how}): DDP marks the recomputed region's parameters ready "
    "twice and raises 'Expected to mark a variable ready only once'; pass use_reentrant=False, "
    "or static_graph=True"
)
MESSAGE_SHARED = (
    "'{member}' runs in more than one reentrant backward per step ({how}) and this file runs under "
    "DistributedDataParallel ({ddp}): DDP marks its parameters ready twice and raises 'Expected to mark a "
    "variable ready only once'; pass use_reentrant=False, or static_graph=True to DDP"
)
EVENT = "module"
_WORDS = ("find_unused_parameters",)


def check(mod: ModuleInfo, ctx: RuleContext) -> Iterator[Hit]:
    yield from _shared(mod, ctx)
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


def _shared(mod: ModuleInfo, ctx: RuleContext) -> Iterator[Hit]:
    uses = list(shared_uses(mod, ctx.sites)) if ctx.sites else []
    wrap = ddp_wrap_for(ctx.project, mod.path) if uses and ctx.project is not None else None
    if wrap is None:
        return
    for use in uses:
        yield Hit(use.call, MESSAGE_SHARED.format(member=use.member, how=use.how, ddp=wrap.where(mod.path)))


def _how(reentrant: list[int], enables: list[int]) -> str:
    parts = []
    if reentrant:
        parts.append("checkpoint at line " + ", ".join(map(str, reentrant[:3])))
    if enables:
        parts.append("gradient checkpointing enabled at line " + ", ".join(map(str, enables[:3])))
    return "; ".join(parts)


VALID = [
    """
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.checkpoint import checkpoint

class Looped(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(8, 8)

    def forward(self, x):
        for _ in range(3):
            x = checkpoint(self.layer, x, use_reentrant=False)
        return x

class TwiceInOneRegion(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(8, 8)

    def twice(self, x):
        return self.layer(self.layer(x))

    def forward(self, x):
        return checkpoint(self.twice, x, use_reentrant=True)

class Switched(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(8, 8)
        self.use_checkpoint = True

    def forward(self, x):
        if self.use_checkpoint: return checkpoint(self.layer, x, use_reentrant=True)  # noqa: E701
        return self.layer(x)

def train(x):
    return [DDP(m())(x) for m in (Looped, TwiceInOneRegion, Switched)]
""",
    """
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.checkpoint import checkpoint

class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(8, 8)

    def forward(self, x):
        for _ in range(3):
            x = checkpoint(self.layer, x, use_reentrant=True)
        return x

def train(x):
    return DDP(Shared(), static_graph=True)(x)
""",
    """
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

class Shared(nn.Module):  # one process: reentrant backwards over one module are fine
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(8, 8)

    def forward(self, x):
        for _ in range(3):
            x = checkpoint(self.layer, x, use_reentrant=True)
        return x
""",
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
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.checkpoint import checkpoint

def create_custom_forward(module):
    def custom_forward(*inputs):
        return module(*inputs)
    return custom_forward

class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(8, 8)
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 8)
        self.b.weight = self.a.weight

    def forward(self, x):
        for _ in range(3):
            x = checkpoint(self.layer, x, use_reentrant=True)  # expect: CKP404
        x = torch.cat([checkpoint(self.layer, c) for c in x.chunk(2)])  # expect: CKP404, CKP401
        for _ in range(2):
            x = checkpoint(create_custom_forward(self.layer), x, use_reentrant=True)  # expect: CKP404
        x = checkpoint(self.a, x, use_reentrant=True)  # expect: CKP404
        x = checkpoint(self.b, x, use_reentrant=True)  # expect: CKP404
        return self.a(checkpoint(self.a, x, use_reentrant=True))  # expect: CKP404

def train(x):
    return DDP(Shared())(x)
""",
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
