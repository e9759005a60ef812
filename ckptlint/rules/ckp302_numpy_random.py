"""CKP302 numpy-random: NumPy's global random state draws inside a checkpointed callable.

What: ``np.random.rand``, ``np.random.randn``, ``np.random.choice``,
``np.random.uniform``, ``np.random.permutation``, ... (the legacy global
``RandomState`` functions), and an unseeded ``np.random.default_rng()``.
A locally seeded ``np.random.default_rng(seed)`` is fine.

Why it breaks checkpointing: checkpoint never stashes NumPy's generator, so
the recompute in backward draws different numbers than the first forward
(measured: wrong gradients in both checkpoint modes).

How to fix: draw outside the checkpointed callable and pass the values in,
use a generator seeded from a value passed in, or use torch's RNG.

Example::

    def forward(self, x):
        noise = np.random.randn(*x.shape)   # CKP302
        return x + torch.from_numpy(noise)
"""

from __future__ import annotations

from typing import Iterator

from ckptlint.analysis.flow import CallEvent
from ckptlint.rules.base import Hit, RuleContext

CODE = "CKP302"
NAME = "numpy-random"
MESSAGE = "{func}() draws from NumPy's global random state {where}: checkpoint does not replay it, so the recompute in backward differs; draw outside or seed a local generator"
EVENT = "call"
_NOT_DRAWS = frozenset({"seed", "RandomState", "Generator", "SeedSequence", "PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64", "BitGenerator", "get_state", "set_state"})


_GENERATORS = frozenset({"numpy.random.default_rng", "numpy.random.RandomState", "numpy.random.Generator"})


def check(event: CallEvent, ctx: RuleContext) -> Iterator[Hit]:
    if event.method is not None and event.method not in _NOT_DRAWS:
        for inst in event.receiver_instances:
            if _GENERATORS & set(inst.qualnames):
                # A generator kept on self/global outlives the call: it advances again in the recompute.
                yield Hit(event.call, MESSAGE.format(func=f"{inst.qualnames[0]}().{event.method}", where=ctx.inside))
                return
    for q in event.qualnames:
        if not q.startswith("numpy.random."):
            continue
        fn = q[len("numpy.random."):]
        if "." in fn or fn in _NOT_DRAWS:
            continue
        if fn == "default_rng" and event.call.args:
            continue  # seeded locally: deterministic on recompute
        yield Hit(event.call, MESSAGE.format(func=q, where=ctx.inside))
        return


VALID = [
    """
import numpy as np
from torch.utils.checkpoint import checkpoint

def block(x, seed):
    rng = np.random.default_rng(seed)
    return x * float(rng.random())

def run(x):
    return checkpoint(block, x, 0, use_reentrant=False)
""",
]

INVALID = [
    """
import numpy as np
from torch.utils.checkpoint import checkpoint

def block(x):
    a = np.random.rand()  # expect: CKP302
    rng = np.random.default_rng()  # expect: CKP302
    return x * a

def run(x):
    return checkpoint(block, x, use_reentrant=False)
""",
]
