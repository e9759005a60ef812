"""CKP304 reseed: a checkpointed callable reseeds a random generator.

What: ``torch.manual_seed``, ``torch.seed``, ``torch.cuda.manual_seed``,
``torch.cuda.manual_seed_all``, ``torch.random.manual_seed``, ``random.seed``,
``np.random.seed`` called inside a checkpointed callable.

Why it breaks checkpointing: reseeding resets global generator state that
checkpoint's RNG stash does not account for; the recompute in backward
reseeds again and the rest of the program's random stream (data order,
dropout masks of later layers) is no longer what the first forward left.

How to fix: seed once at program start (or per step, in the training loop),
never inside the model.

Example::

    def forward(self, x):
        torch.manual_seed(0)     # CKP304
        return F.dropout(x, 0.1)
"""

from __future__ import annotations

from typing import Iterator

from ckptlint.analysis.flow import CallEvent
from ckptlint.rules.base import Hit, RuleContext

CODE = "CKP304"
NAME = "reseed"
MESSAGE = "{func}() reseeds a global generator {where}: the recompute in backward reseeds again and the program's random stream changes; seed once outside the model"
EVENT = "call"

RESEED = frozenset(
    {
        "torch.manual_seed",
        "torch.seed",
        "torch.random.manual_seed",
        "torch.random.seed",
        "torch.cuda.manual_seed",
        "torch.cuda.manual_seed_all",
        "torch.cuda.seed",
        "torch.cuda.seed_all",
        "random.seed",
        "numpy.random.seed",
    }
)


def check(event: CallEvent, ctx: RuleContext) -> Iterator[Hit]:
    for q in event.qualnames:
        if q in RESEED:
            yield Hit(event.call, MESSAGE.format(func=q, where=ctx.inside))
            return


VALID = [
    """
import torch
from torch.utils.checkpoint import checkpoint

def block(x):
    return x * 2

def run(x):
    torch.manual_seed(0)
    return checkpoint(block, x, use_reentrant=False)
""",
]

INVALID = [
    """
import random
import numpy as np
import torch
from torch.utils.checkpoint import checkpoint

def block(x):
    torch.manual_seed(0)  # expect: CKP304
    random.seed(1)  # expect: CKP304
    np.random.seed(2)  # expect: CKP304
    return x * 2

def run(x):
    return checkpoint(block, x, use_reentrant=False)
""",
]
