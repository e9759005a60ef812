"""CKP204 batchnorm-running-stats: a BatchNorm that tracks running stats runs under checkpoint.

What: calling a BatchNorm-family module (``nn.BatchNorm1d/2d/3d``,
``SyncBatchNorm``, ``LazyBatchNorm*``, ``InstanceNorm*`` built with
``track_running_stats=True``, and classes in the checked tree that subclass
them, e.g. timm's ``BatchNormAct2d``) inside a checkpointed callable, or
``F.batch_norm(..., training=...)`` with running statistics. Not flagged:
``track_running_stats=False``, GroupNorm, LayerNorm.

Why it breaks checkpointing: in training mode BatchNorm updates
``running_mean``, ``running_var`` and ``num_batches_tracked`` on every call.
The recompute in backward calls it again, so each step updates the
statistics twice (``num_batches_tracked`` 2 instead of 1, running mean
pulled further): eval-mode results drift from the unchecked model.

How to fix: keep BatchNorm outside the checkpointed region, use a norm
without running stats (GroupNorm/LayerNorm), or save and restore the
buffers around the recompute (``torch.nn.utils.fusion``-style frozen BN for
fine-tuning: ``track_running_stats=False`` or ``eval()`` BN layers).

Example::

    self.bn = nn.BatchNorm2d(64)
    def forward(self, x):
        return self.bn(self.conv(x))    # CKP204 when checkpointed
"""

from __future__ import annotations

from typing import Iterator

from ckptlint.analysis import names as N
from ckptlint.analysis.flow import CallEvent
from ckptlint.infer import known
from ckptlint.infer.lattice import Instance, literal_truth
from ckptlint.rules.base import Hit, RuleContext, kwarg

CODE = "CKP204"
NAME = "batchnorm-running-stats"
MESSAGE = "{module} updates its running statistics {where}: the recompute in backward updates them a second time; keep it outside the checkpointed region or use track_running_stats=False"
EVENT = "call"
_BN_FUNCTIONAL = frozenset({"torch.nn.functional.batch_norm", "torch.batch_norm"})


def _tracks(inst: Instance, bases: set[str]) -> bool:
    flag = inst.truth("track_running_stats", 4 if N.matches(inst.qualnames, N.BATCHNORM_CLASSES) else None)
    if N.matches(inst.qualnames, N.BATCHNORM_CLASSES | known.batchnorm_names()) or bases & N.BATCHNORM_CLASSES:
        return flag is not False
    if N.matches(inst.qualnames, N.INSTANCENORM_CLASSES) or bases & N.INSTANCENORM_CLASSES:
        return flag is True
    return False


def check(event: CallEvent, ctx: RuleContext, project: object = None) -> Iterator[Hit]:
    if N.matches(event.qualnames, _BN_FUNCTIONAL):
        training = kwarg(event.call, "training")
        positional = [v for k, v, _, s in event.args if k is None and not s]
        train_value = training.value if training is not None else (positional[5] if len(positional) > 5 else None)
        running = kwarg(event.call, "running_mean")
        running_value = running.value if running is not None else (positional[1] if len(positional) > 1 else None)
        if train_value is None or literal_truth(train_value) is False:
            return
        if running_value is None or literal_truth(running_value) is False:
            return
        yield Hit(event.call, MESSAGE.format(module="F.batch_norm(training=...)", where=ctx.inside))
        return
    for called in event.instances:
        # A Sequential called directly (``self.primary_conv(x)``) runs each of its members.
        for inst in called.leaves():
            bases = ctx_bases(ctx, inst)
            if _tracks(inst, bases):
                name = inst.short_name if inst is called else f"{inst.short_name} in {called.short_name}"
                yield Hit(event.call, MESSAGE.format(module=name, where=ctx.inside))
                return
            if inst.cls is None:
                # An out-of-tree composite (torchvision's Conv2dNormActivation, mmcv's ConvModule).
                built = known.members(inst.qualnames, lambda n, p: inst.kwarg(n, p if p >= 0 else None), _resolver(ctx, inst))
                bn = [m for m in built if m in N.BATCHNORM_CLASSES or m in known.batchnorm_names()]
                if bn:
                    yield Hit(event.call, MESSAGE.format(module=f"{bn[0].rsplit('.', 1)[-1]} in {inst.short_name}", where=ctx.inside))
                    return


def _resolver(ctx: RuleContext, inst: Instance):  # type: ignore[no-untyped-def]
    project = getattr(ctx, "project", None)

    def resolve(expr):  # type: ignore[no-untyped-def]
        return project.resolve_expr(inst.module, expr) if project is not None else []

    return resolve


def ctx_bases(ctx: RuleContext, inst: Instance) -> set[str]:
    if inst.cls is None:
        return set()
    project = getattr(ctx, "project", None)
    if project is None:
        return set()
    return project.all_base_names(inst.cls)


VALID = [
    """
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(8, track_running_stats=False)
        self.gn = nn.GroupNorm(2, 8)
        self.ln = nn.LayerNorm(8)
        self.inorm = nn.InstanceNorm2d(8)

    def forward(self, x):
        return self.ln(self.gn(self.bn(self.inorm(x))))

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()

    def forward(self, x):
        return checkpoint(self.block, x, use_reentrant=False)
""",
]

INVALID = [
    """
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

class MyBN(nn.BatchNorm2d):
    pass

class Block(nn.Module):
    def __init__(self, norm_layer=nn.BatchNorm2d):
        super().__init__()
        self.bn1 = norm_layer(8)
        self.bn2 = MyBN(8)

    def forward(self, x):
        x = self.bn1(x)  # expect: CKP204
        return self.bn2(x)  # expect: CKP204

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()

    def forward(self, x):
        return checkpoint(self.block, x, use_reentrant=False)
""",
]
