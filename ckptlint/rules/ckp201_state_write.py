"""CKP201 state-write: a checkpointed callable writes state that outlives the call.

What: assignment, augmented assignment, item assignment, an in-place tensor
op or a mutating container method on ``self.<attr>`` (counters, buffers,
caches: ``self.count += 1``, ``self.buf.add_(1)``, ``self.cache[k] = v``)
or on an attribute of an object the function did not create (an argument,
a global: ``x.attr = v``).

Why it breaks checkpointing: the recompute in backward runs the body again,
so the write happens twice (counters step twice, buffers update twice), and
any code that reads the state in between sees a different value in the
recompute than in the first forward: different branches, missing or extra
gradients, wrong gradients.

Not flagged: writes that store the same value on every run, so the
recompute's second write is a no-op — tensor metadata
(``self.input_dtype = x.dtype``, ``.device``), a converted copy
of the attribute itself (``self.classifier = self.classifier.to(x.dtype)``),
fill-once / keyed caches (``if self.cos is None`` / ``if seq_len >
self.max_seq_len_cached: ...``) whose value depends only on constants,
parameters, buffers or the inputs' shape, dtype and device, and a
``dict.update`` writing back what it reads from the same dict. A fill-once
cache computed from an input's *values* (``if self.prefix is None:
self.prefix = self.proj(x)``) is reported: the recompute skips the fill, so
it saves fewer tensors than the forward (non-reentrant checkpoint raises
CheckpointError) or, reentrant, the forward ran under ``no_grad`` and the
cached value carries no gradient to the parameters it used.

How to fix: keep such state outside the checkpointed callable (update it in
the caller after the checkpoint returns), or return the new value.

Example::

    def forward(self, x):
        self.steps += 1        # CKP201
        return self.fc(x)
"""

from __future__ import annotations

from typing import Iterator

import libcst as cst

from ckptlint.analysis import names as N
from ckptlint.analysis.flow import CallEvent, Root, WriteEvent
from ckptlint.rules._common import inplace_method, written
from ckptlint.rules._idempotent import idempotent_assignment, idempotent_update
from ckptlint.rules.base import Hit, RuleContext

CODE = "CKP201"
NAME = "state-write"
MESSAGE = "{what} {where}: the recompute in backward writes it again and later code may read a different value; move the update outside the checkpointed region"
EVENT = "call"
EVENTS = ("call", "write")
FILL_ONCE_MESSAGE = (
    "fills {target} once from the call's inputs {where}: the recompute in backward finds it filled and "
    "skips the computation (non-reentrant: CheckpointError; reentrant: the parameters it used get no "
    "gradient); compute it outside the checkpointed region or on every call"
)


def _is_state(root: Root, target: cst.BaseExpression | None) -> bool:
    if root.kind == "self":
        return True
    if root.kind == "input" and root.through_attribute and isinstance(target, cst.Attribute):
        return True
    if root.kind in ("outer", "global", "closure", "module") and root.through_attribute:
        # ``CONFIG.flag = ...`` / ``np.x = ...``; torch.backends flags are CKP205.
        return not any(q.startswith("torch.") for q in root.qualnames)
    return False


def check(event: CallEvent | WriteEvent, ctx: RuleContext) -> Iterator[Hit]:
    if isinstance(event, WriteEvent):
        if event.from_inputs:  # a fill-once block (memoized) filled from an input's values
            yield Hit(event.target, FILL_ONCE_MESSAGE.format(target=written(event.target), where=ctx.inside))
            return
        if event.memoized:
            return
        target = event.target
        root = event.root
        if root.kind == "self" and isinstance(target, (cst.Attribute, cst.Subscript)):
            pass
        elif not (isinstance(target, cst.Attribute) and _is_state(root, target)):
            return
        if event.kind == "assign" and idempotent_assignment(event.stmt, target):
            return  # tensor metadata / a converted copy of itself: the recompute writes the same value
        kind = {"assign": "writes", "aug": "updates", "del": "deletes"}[event.kind]
        yield Hit(target, MESSAGE.format(what=f"{kind} {written(target)}", where=ctx.inside))
        return
    method = event.method
    if method is None or event.receiver is None or event.receiver.kind != "self":
        return
    func = event.call.func
    assert isinstance(func, cst.Attribute)
    base = func.value
    if isinstance(base, cst.Name) and not event.receiver.through_attribute:
        return  # ``self.method()``: a call, not a write
    if method == "update" and idempotent_update(event.call, ctx.function):
        return
    if inplace_method(method) or method in N.CONTAINER_MUTATORS:
        yield Hit(event.call, MESSAGE.format(what=f"{method}() mutates {written(base)}", where=ctx.inside))


VALID = [
    """
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

class MoELayer(nn.Module):
    # Megatron-style phase markers: each run writes the same constants in the same order.
    def __init__(self):
        super().__init__()
        self.mlp = nn.Linear(4, 4)
        self.mlp.fwd_execution_map = None

    def forward(self, x):
        self.mlp.fwd_execution_map = "route"
        h = self.mlp(x)
        self.mlp.fwd_execution_map = "postprocess"
        return h

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.moe = MoELayer()

    def forward(self, x):
        return checkpoint(self.moe, x, use_reentrant=False)
""",
    """
import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

class Block(nn.Module):
    # A fill-once table from a parameter that shares the input's name: ``self.x`` is not ``x``.
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.x = nn.Parameter(torch.zeros(4))
        self.table = None

    def forward(self, x):
        if self.table is None:
            self.table = self.x.detach() * 2
        return self.fc(x) + self.table

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()

    def forward(self, x):
        return checkpoint(self.block, x, use_reentrant=False)
""",
    """
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

class SwinLayer(nn.Module):
    # transformers' Swin: a window clamped to the input resolution, an int tuple (not a tensor).
    def __init__(self):
        super().__init__()
        self.window_size = 7
        self.fc = nn.Linear(4, 4)

    def forward(self, x, input_resolution: tuple[int, int]):
        if min(input_resolution) <= self.window_size:
            self.window_size = min(input_resolution)
        return self.fc(x)

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = SwinLayer()

    def forward(self, x):
        return checkpoint(self.layer, x, (4, 4), use_reentrant=False)
""",
    """
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.pad = None
        self.bias_cache = {}

    def forward(self, x):
        if self.pad is None:
            self.pad = x.shape[-1] % 2
            self.pad_size = x.shape
        key = str(x.device)
        if key not in self.bias_cache:
            self.bias_cache[key] = x.new_zeros(1)
        return x + self.bias_cache[key]

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()

    def forward(self, x):
        return checkpoint(self.block, x, use_reentrant=False)
""",
    """
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.count = 0

    def forward(self, x):
        h = self.fc(x)
        if self.training:
            h = h * 2
        return h

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
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
        self.fc = nn.Linear(4, 4)
        self.count = 0
        self.cache = {}

    def forward(self, x):
        self.count += 1  # expect: CKP201
        self.last = x  # expect: CKP201
        self.cache["h"] = x  # expect: CKP201
        self.steps.add_(1)  # expect: CKP201
        return self.fc(x)

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()

    def forward(self, x):
        return checkpoint(self.block, x, use_reentrant=False)
""",
    """
import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

class Adapter(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.prefix = None
        self.rope = None

    def forward(self, x):
        if self.rope is None:
            self.rope = torch.arange(x.shape[-1], device=x.device)  # shape and device only: fills the same
        if self.prefix is None:
            self.prefix = self.proj(x)  # expect: CKP201
        return x + self.prefix + self.rope

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.adapter = Adapter()

    def forward(self, x):
        return checkpoint(self.adapter, x, use_reentrant=False)
""",
]
