"""CKP305 rng-not-preserved: random ops run under ``preserve_rng_state=False``.

What: a torch random op or dropout (``F.dropout*``, ``nn.Dropout*`` module
calls, ``torch.rand*``, ``bernoulli``, ``multinomial``, ``normal_``,
``uniform_``, ``rrelu``/``nn.RReLU``, ...) inside a callable whose checkpoint
call passes ``preserve_rng_state=False``. Not flagged under the default
``preserve_rng_state=True``, where checkpoint replays the RNG.

Why it breaks checkpointing: with ``preserve_rng_state=False`` the recompute
in backward draws fresh random numbers — a different dropout mask than the
forward used — so gradients are wrong (measured in both modes), and the
global RNG stream advances an extra time.

How to fix: drop ``preserve_rng_state=False`` (the default replays the RNG),
or move the random op outside the checkpointed region.

Example::

    checkpoint(self.block, x, use_reentrant=False, preserve_rng_state=False)
    # Block.forward: return self.drop(self.fc(x))   -> CKP305
"""

from __future__ import annotations

from typing import Iterator

from ckptlint.analysis import names as N
from ckptlint.analysis.flow import CallEvent
from ckptlint.rules._common import written
from ckptlint.rules.base import Hit, RuleContext

CODE = "CKP305"
NAME = "rng-not-preserved"
MESSAGE = "{what} draws random numbers {where} with preserve_rng_state=False: the recompute in backward draws different ones; keep the default preserve_rng_state=True"
# Sites through a checkpoint autograd.Function that does not restore the RNG (discovery/custom_functions.py).
CUSTOM_FUNCTION_MESSAGE = "{what} draws random numbers {where} through {via}(), a checkpoint autograd.Function that does not restore the RNG state: the recompute in its backward draws different ones; stash torch.get_rng_state() in forward and restore it under torch.random.fork_rng() before rerunning, or use torch.utils.checkpoint"
EVENT = "call"


def check(event: CallEvent, ctx: RuleContext) -> Iterator[Hit]:
    if ctx.preserve_rng_state:
        return
    what = None
    if N.matches(event.qualnames, N.RANDOM_FUNCTIONS):
        what = f"{written(event.call.func)}()"
    elif event.method in N.RANDOM_METHODS and not event.qualnames:
        what = f"{event.method}()"
    else:
        for inst in event.instances:
            if N.matches(inst.qualnames, N.DROPOUT_CLASSES):
                what = f"{inst.short_name} module"
                break
    if what is not None:
        via = ctx.checked.via if ctx.checked is not None else ""
        template = CUSTOM_FUNCTION_MESSAGE if via.endswith(".apply") else MESSAGE  # a home-made checkpoint Function
        yield Hit(event.call, template.format(what=what, where=ctx.inside, via=via))


VALID = [
    """
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

def block(x):
    return F.dropout(x, 0.1)

def run(x):
    return checkpoint(block, x, use_reentrant=False)
""",
]

INVALID = [
    """
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.1)

    def forward(self, x):
        x = self.drop(x)  # expect: CKP305
        return F.dropout(x, 0.1) + torch.rand_like(x)  # expect: CKP305, CKP305

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()

    def forward(self, x):
        return checkpoint(self.block, x, use_reentrant=False, preserve_rng_state=False)
""",
]
