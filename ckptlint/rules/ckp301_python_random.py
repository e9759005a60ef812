"""CKP301 python-random: Python's ``random`` module draws inside a checkpointed callable.

What: ``random.random()``, ``random.randint``, ``random.choice``,
``random.shuffle``, ``random.uniform``, ... — functions that draw from the
``random`` module's global generator (a locally seeded ``random.Random(seed)``
instance is fine).

Why it breaks checkpointing: checkpoint's ``preserve_rng_state`` only stashes
torch's generators. The recompute in backward draws fresh Python random
numbers, so it takes other branches/values than the first forward did
(measured: wrong gradients in both checkpoint modes), and the global stream
advances twice.

How to fix: draw the random decision outside the checkpointed callable and
pass it in, or use torch's RNG (``torch.rand``), which checkpoint replays.

Example::

    def forward(self, x):
        if random.random() < self.p:    # CKP301
            return x
        return self.block(x)
"""

from __future__ import annotations

from typing import Iterator

from ckptlint.analysis.flow import CallEvent
from ckptlint.rules.base import Hit, RuleContext

CODE = "CKP301"
NAME = "python-random"
MESSAGE = "{func}() draws from Python's global random state {where}: checkpoint does not replay it, so the recompute in backward differs; draw outside and pass the value in"
EVENT = "call"
_NOT_DRAWS = frozenset({"seed", "Random", "SystemRandom", "getstate", "setstate"})


def check(event: CallEvent, ctx: RuleContext) -> Iterator[Hit]:
    if event.method is not None and event.method not in _NOT_DRAWS:
        for inst in event.receiver_instances:
            if "random.Random" in inst.qualnames:
                # A generator kept on self/global outlives the call: it advances again in the recompute.
                yield Hit(event.call, MESSAGE.format(func=f"random.Random.{event.method}", where=ctx.inside))
                return
    for q in event.qualnames:
        head, _, rest = q.partition(".")
        if head == "random" and rest and "." not in rest and rest not in _NOT_DRAWS:
            yield Hit(event.call, MESSAGE.format(func=q, where=ctx.inside))
            return


VALID = [
    """
import random
from torch.utils.checkpoint import checkpoint

def block(x, keep):
    rng = random.Random(0)
    return x if keep else x * 2

def run(x):
    keep = random.random() < 0.5
    return checkpoint(block, x, keep, use_reentrant=False)
""",
]

INVALID = [
    """
import random
from random import choice
from torch.utils.checkpoint import checkpoint

def block(x):
    if random.random() < 0.5:  # expect: CKP301
        return x
    return x * choice([1, 2])  # expect: CKP301

def run(x):
    return checkpoint(block, x, use_reentrant=False)
""",
]
