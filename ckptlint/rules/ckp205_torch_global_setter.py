"""CKP205 torch-global-setter: a checkpointed callable changes torch's global settings.

What: ``torch.set_default_dtype``, ``torch.set_default_device``,
``torch.set_default_tensor_type``, ``torch.use_deterministic_algorithms``,
``torch.set_float32_matmul_precision``, ``torch.set_num_threads``,
``torch.autograd.set_detect_anomaly``, ``torch.set_grad_enabled(...)`` called
as a statement (the context-manager form is fine), and assignments to
``torch.backends.*`` flags (``torch.backends.cudnn.benchmark = True``).

Why it breaks checkpointing: the first forward changes process-wide state
that the recompute in backward then runs under (a different default dtype,
matmul precision or grad mode), so the recompute computes something else
than the first forward — or the rest of the program does.

How to fix: set global options once at program start, or use the scoped
form (``with torch.set_grad_enabled(False):``, ``torch.autocast``).

Example::

    def forward(self, x):
        torch.set_default_dtype(torch.float64)   # CKP205
        return self.fc(x)
"""

from __future__ import annotations

from typing import Iterator

from ckptlint.analysis.flow import CallEvent, WriteEvent
from ckptlint.rules._common import written
from ckptlint.rules.base import Hit, RuleContext

CODE = "CKP205"
NAME = "torch-global-setter"
MESSAGE = "{what} changes torch global state {where}: the recompute in backward runs under the changed setting; set it once outside the model or use a scoped context manager"
EVENT = "call"
EVENTS = ("call", "write")

SETTERS = frozenset(
    "torch." + n
    for n in (
        "set_default_dtype",
        "set_default_device",
        "set_default_tensor_type",
        "use_deterministic_algorithms",
        "set_deterministic_debug_mode",
        "set_float32_matmul_precision",
        "set_num_threads",
        "set_num_interop_threads",
        "set_flush_denormal",
        "set_warn_always",
        "set_anomaly_enabled",
        "autograd.set_detect_anomaly",
        "autograd.set_grad_enabled",
        "set_autocast_enabled",
        "set_autocast_gpu_dtype",
        "set_autocast_cpu_dtype",
        "set_autocast_dtype",
        "_C._set_grad_enabled",
        "set_grad_enabled",
        "autograd.grad_mode.set_grad_enabled",
    )
)


def check(event: CallEvent | WriteEvent, ctx: RuleContext) -> Iterator[Hit]:
    if isinstance(event, WriteEvent):
        if event.root.kind == "module" and any(q.startswith("torch.backends.") for q in event.target_qualnames):
            yield Hit(event.target, MESSAGE.format(what=f"assigning {written(event.target)}", where=ctx.inside))
        return
    if event.in_with:
        return
    for q in event.qualnames:
        if q in SETTERS:
            yield Hit(event.call, MESSAGE.format(what=f"{q}()", where=ctx.inside))
            return


VALID = [
    """
import torch
from torch.utils.checkpoint import checkpoint

def block(x):
    with torch.set_grad_enabled(True):
        return x * 2

def run(x):
    torch.set_default_dtype(torch.float32)
    return checkpoint(block, x, use_reentrant=False)
""",
]

INVALID = [
    """
import torch
from torch.utils.checkpoint import checkpoint

def block(x):
    torch.set_default_dtype(torch.float64)  # expect: CKP205
    torch.backends.cudnn.benchmark = True  # expect: CKP205
    torch.set_grad_enabled(False)  # expect: CKP205
    return x * 2

def run(x):
    return checkpoint(block, x, use_reentrant=False)
""",
]
