"""CKP303 explicit-generator: a torch random op draws from an explicit ``generator=``.

What: a torch random function or tensor method called with ``generator=g``
(``torch.randn(..., generator=g)``, ``x.normal_(generator=g)``,
``torch.randperm(n, generator=g)``) inside a checkpointed callable.

Why it breaks checkpointing: ``preserve_rng_state`` stashes only the default
generators. A user ``torch.Generator`` advances during the first forward and
again in the recompute, which therefore draws different numbers (measured:
wrong gradients in both modes).

How to fix: draw with the default generator (which checkpoint replays), or
draw outside the checkpointed callable and pass the tensor in, or clone the
generator state at entry (``g.get_state()``/``set_state``) yourself.

Example::

    def forward(self, x):
        return x + torch.randn(x.shape, generator=self.gen)   # CKP303
"""

from __future__ import annotations

from typing import Iterator

from ckptlint.analysis import names as N
from ckptlint.analysis.flow import CallEvent
from ckptlint.rules._common import written
from ckptlint.rules.base import Hit, RuleContext, kwarg

CODE = "CKP303"
NAME = "explicit-generator"
MESSAGE = "{func}(generator=...) draws from a generator checkpoint does not stash {where}: the recompute in backward draws different numbers; use the default generator or draw outside"
EVENT = "call"


def check(event: CallEvent, ctx: RuleContext) -> Iterator[Hit]:
    arg = kwarg(event.call, "generator")
    if arg is None:
        return
    from libcst import Name

    if isinstance(arg.value, Name) and arg.value.value == "None":
        return
    for keyword, _, root, _ in event.args:
        if keyword == "generator" and root.kind == "local":
            return  # created (and seeded) in the function: the recompute replays it
    is_torch = any(q.startswith("torch.") for q in event.qualnames)
    is_method = event.method is not None and (event.method in N.RANDOM_METHODS or event.method.startswith("rand"))
    if is_torch or is_method:
        yield Hit(event.call, MESSAGE.format(func=written(event.call.func), where=ctx.inside))


VALID = [
    """
import torch
from torch.utils.checkpoint import checkpoint

def block(x):
    return x + torch.randn_like(x)

def run(x, g):
    noise = torch.randn(x.shape, generator=g)
    return checkpoint(block, x + noise, use_reentrant=False)
""",
]

INVALID = [
    """
import torch
from torch.utils.checkpoint import checkpoint

def block(x, g):
    return x + torch.randn(x.shape, generator=g)  # expect: CKP303

def run(x, g):
    return checkpoint(block, x, g, use_reentrant=False)
""",
]
