"""CKP402 reentrant-with-kwargs: ``use_reentrant=True`` with keyword arguments for the function.

What: a checkpoint call with ``use_reentrant=True`` that also passes keyword
arguments meant for the checkpointed function
(``checkpoint(fn, x, use_reentrant=True, mask=m)``).

Why it breaks checkpointing: the reentrant implementation only forwards
positional arguments; PyTorch raises ``ValueError: Unexpected keyword
arguments`` as soon as the call runs.

How to fix: use ``use_reentrant=False`` (which forwards keyword arguments),
or pass the values positionally / bind them with ``functools.partial``.

Example::

    checkpoint(self.layer, x, use_reentrant=True, attention_mask=mask)   # CKP402
"""

from __future__ import annotations

from typing import Iterator

from ckptlint.analysis import names as N
from ckptlint.discovery.sites import SiteCall
from ckptlint.rules.base import Hit, RuleContext, literal

CODE = "CKP402"
NAME = "reentrant-with-kwargs"
MESSAGE = "{func}(use_reentrant=True){of} passes keyword argument(s) {names} to the function: the reentrant variant raises ValueError; use use_reentrant=False or pass them positionally"
EVENT = "site"


def check(site: SiteCall, ctx: RuleContext) -> Iterator[Hit]:
    if site.kind not in ("checkpoint", "gc_func"):
        return
    value = site.option("use_reentrant")
    if value is None or literal(value) is not True:
        return
    names = [a.keyword.value for a in site.call.args if a.keyword is not None and a.keyword.value not in N.CHECKPOINT_OWN_KWARGS]
    if names:
        yield Hit(site.call, MESSAGE.format(func=site.name, of=ctx.of_callable, names=", ".join(repr(n) for n in names)))


VALID = [
    """
from torch.utils.checkpoint import checkpoint

def block(x, mask=None):
    return x * 2

def run(x, m):
    a = checkpoint(block, x, m, use_reentrant=True)
    return checkpoint(block, a, use_reentrant=False, mask=m)
""",
]

INVALID = [
    """
from torch.utils.checkpoint import checkpoint

def block(x, mask=None):
    return x * 2

def run(x, m):
    return checkpoint(block, x, use_reentrant=True, mask=m)  # expect: CKP402
""",
]
