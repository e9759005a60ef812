"""Runtime verifier for gradient checkpointing (needs the ``runtime`` extra: torch, hypothesis).

``verify(model, inputs)`` runs the model as it checkpoints and again with every
checkpoint bypassed, and reports what differs: outputs, gradients, buffers,
RNG streams. See ``docs/runtime.md``.

Attributes are imported lazily: the pytest plugin (``runtime_checks.pytest_plugin``,
loaded by every pytest run through its entry point) must not import torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__all__ = [
    "DistributedError",
    "DistributedReport",
    "MemoryStats",
    "Mismatch",
    "ParameterWriteError",
    "Plan",
    "PlanError",
    "Profile",
    "Report",
    "TimingStats",
    "VerifyError",
    "apply_plan",
    "assert_checkpoint_equivalent",
    "bypass_checkpointing",
    "check_checkpoint_equivalence",
    "heuristics",
    "inputs",
    "measure_plan",
    "plan",
    "profile",
    "tensors",
    "verify",
    "verify_distributed",
]

_WHERE = {
    "DistributedError": "runtime_checks.distributed",
    "DistributedReport": "runtime_checks.distributed",
    "verify_distributed": "runtime_checks.distributed",
    "MemoryStats": "runtime_checks.report",
    "Mismatch": "runtime_checks.report",
    "Report": "runtime_checks.report",
    "TimingStats": "runtime_checks.report",
    "VerifyError": "runtime_checks.verify",
    "ParameterWriteError": "runtime_checks.snapshot",
    "verify": "runtime_checks.verify",
    "assert_checkpoint_equivalent": "runtime_checks.assertions",
    "check_checkpoint_equivalence": "runtime_checks.assertions",
    "bypass_checkpointing": "runtime_checks.bypass",
    "inputs": "runtime_checks.strategies",
    "tensors": "runtime_checks.strategies",
    "Profile": "runtime_checks.profile",
    "profile": "runtime_checks.profile",
    "Plan": "runtime_checks.plan",
    "PlanError": "runtime_checks.plan",
    "plan": "runtime_checks.plan",
    "heuristics": "runtime_checks.plan",
    "apply_plan": "runtime_checks.apply",
    "measure_plan": "runtime_checks.apply",
}

if TYPE_CHECKING:  # pragma: no cover
    from runtime_checks.apply import apply_plan, measure_plan
    from runtime_checks.plan import Plan, PlanError, heuristics, plan
    from runtime_checks.profile import Profile, profile
    from runtime_checks.assertions import (
        assert_checkpoint_equivalent,
        check_checkpoint_equivalence,
    )
    from runtime_checks.bypass import bypass_checkpointing
    from runtime_checks.distributed import DistributedError, DistributedReport, verify_distributed
    from runtime_checks.report import MemoryStats, Mismatch, Report, TimingStats
    from runtime_checks.snapshot import ParameterWriteError
    from runtime_checks.strategies import inputs, tensors
    from runtime_checks.verify import VerifyError, verify


class _Package(types.ModuleType):
    """Keep ``runtime_checks.verify`` the function once the submodule of that name is imported."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _WHERE and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'runtime_checks' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
