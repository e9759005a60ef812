"""CKP501 lone-cheap-op: checkpoint around a single activation or norm.

What: torch's ``checkpoint(F.relu, x)``, ``checkpoint(torch.sigmoid, x)``,
``checkpoint(self.norm, x)`` where ``self.norm`` is one ``nn.LayerNorm``,
``nn.GELU``, ``nn.Dropout``, ... — an elementwise activation, a norm or an
``nn.Identity`` checkpointed on its own. Calls through a team's own wrapper
function are not flagged (yet).

Why it only costs time: non-reentrant checkpointing keeps the region's
inputs alive to rerun it, and such an op saves at most a tensor the size of
its input (ReLU saves its output, LayerNorm its input plus two small
statistics). Nothing, or a few bytes per row, is freed, while backward pays
an extra call, the RNG stash and the recompute. Measured with
``runtime_checks.profile`` (torch 2.13, CPU) on ``Linear(1024, 4096) -> op ->
Linear(4096, 8)``, batch 64: checkpointing the op alone takes the step's
activations from 2.25 MiB to 2.25 MiB for ``nn.GELU`` and ``nn.LayerNorm``
(+5 KiB of RNG state), and from 1.25 MiB *up* to 2.25 MiB for ``nn.ReLU``
(the next Linear still saves ReLU's output, and checkpoint now also keeps
ReLU's input).

How to fix: drop the checkpoint, or checkpoint the block the op belongs to
(attention + MLP), where the saved activations are many times the input.

Example::

    h = checkpoint(F.gelu, self.fc(x), use_reentrant=False)     # CKP501
    h = checkpoint(self.mlp, x, use_reentrant=False)            # fine: a whole block
"""

from __future__ import annotations

from typing import Iterator

from ckptlint.analysis import names as N
from ckptlint.discovery.sites import SiteCall
from ckptlint.rules._efficiency import CHEAP_FUNCTIONS, CHEAP_MODULES, qualnames
from ckptlint.rules.base import Hit, RuleContext

CODE = "CKP501"
NAME = "lone-cheap-op"
MESSAGE = "{func}() around the single op {op}: checkpoint keeps its input, which is as large as what {op} saves, so nothing is freed and backward pays a recompute; drop the checkpoint or checkpoint the whole block"
EVENT = "site"


def check(site: SiteCall, ctx: RuleContext) -> Iterator[Hit]:
    if site.kind != "checkpoint" or not site.torch_api or not site.call.args:
        return
    first = site.call.args[0]
    if first.keyword is not None or first.star:
        return
    quals = qualnames(site, first.value)
    if N.matches(quals, CHEAP_FUNCTIONS):
        yield Hit(site.call, MESSAGE.format(func=site.name, op=quals[0].rsplit(".", 1)[-1]))
        return
    member = ctx.checked.member if ctx.checked is not None else None
    alone = ctx.checked is not None and ctx.checked.member_alone  # not one module of a checkpointed Sequential
    if member is not None and alone and not member.is_container and N.matches(member.qualnames, CHEAP_MODULES):
        yield Hit(site.call, MESSAGE.format(func=site.name, op=member.short_name))


VALID = [
    """
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 32), nn.Linear(32, 8)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp = Mlp()

    def forward(self, x):
        relu = lambda t: t * 2
        return checkpoint(self.mlp, x, use_reentrant=False) + checkpoint(relu, x, use_reentrant=False)
""",
    """
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 8))

    def forward(self, x):
        return checkpoint(self.mlp, x, use_reentrant=False)  # a whole block that starts with a norm
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
        self.fc = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)

    def forward(self, x):
        h = checkpoint(F.gelu, self.fc(x), use_reentrant=False)  # expect: CKP501
        h = checkpoint(torch.sigmoid, h, use_reentrant=False)  # expect: CKP501
        return checkpoint(self.norm, h, use_reentrant=False)  # expect: CKP501
""",
]
