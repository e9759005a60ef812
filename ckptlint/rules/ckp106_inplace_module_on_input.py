"""CKP106 inplace-module-on-input: an in-place module (``nn.ReLU(inplace=True)``) applied to an input.

What: calling a module that ``__init__`` built with a literal
``inplace=True`` (``nn.ReLU(inplace=True)``, ``nn.ReLU(True)``,
``nn.Dropout(p, inplace=True)``, timm's ``act_layer(inplace=True)``) on an
input of a checkpointed callable or an alias/view of one. A non-constant
flag such as ``act(inplace=i > 0)`` is not flagged.

Why it breaks checkpointing: the module overwrites its argument, i.e. the
tensor checkpoint keeps for the recompute in backward (torch raises, or the
recompute sees activated values).

How to fix: build that module with ``inplace=False``, or apply it to a fresh
intermediate (``x = self.act(self.fc(x))``).

Example::

    self.act = nn.ReLU(inplace=True)
    ...
    def forward(self, x):
        return self.fc(self.act(x))   # CKP106
"""

from __future__ import annotations

from typing import Iterator

from ckptlint.analysis.flow import CallEvent
from ckptlint.rules._common import first_positional, instance_flag, written
from ckptlint.rules.base import Hit, RuleContext, describe

CODE = "CKP106"
NAME = "inplace-module-on-input"
MESSAGE = "in-place module {module}(inplace=True) applied to {subject} {where}: it overwrites the tensor the recompute in backward starts from; build it with inplace=False"
EVENT = "call"


def check(event: CallEvent, ctx: RuleContext) -> Iterator[Hit]:
    if not event.instances:
        return
    first = first_positional(event)
    if first is None or first[1].kind != "input":
        return
    for inst in event.instances:
        if inst.is_container:
            continue
        if instance_flag(inst, "inplace") is True:
            yield Hit(
                event.call,
                MESSAGE.format(module=inst.short_name, subject=describe(first[1], written(first[0])), where=ctx.where),
            )
            return


VALID = [
    """
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

class Block(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.ReLU(inplace=True)
        self.acts = nn.ModuleList([nn.ReLU(inplace=i > 0) for i in range(n)])

    def forward(self, x):
        x = self.acts[0](x)
        return self.act(self.fc(x))

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block(2)

    def forward(self, x):
        return checkpoint(self.block, x, use_reentrant=False)
""",
]

INVALID = [
    """
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.act = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(self.act(x))  # expect: CKP106

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()

    def forward(self, x):
        return checkpoint(self.block, x, use_reentrant=False)
""",
]
