"""Runtime verifier for gradient checkpointing (needs the ``runtime`` extra: torch, hypothesis).

``verify(model, inputs)`` runs the model as it checkpoints and again with every
checkpoint bypassed, and reports what differs: outputs, gradients, buffers,
RNG streams, Python state. See ``docs/runtime.md``.
"""

from __future__ import annotations

from runtime_checks.assertions import assert_checkpoint_equivalent, check_checkpoint_equivalence
from runtime_checks.bypass import bypass_checkpointing
from runtime_checks.report import MemoryStats, Mismatch, Report, TimingStats
from runtime_checks.strategies import inputs, tensors
from runtime_checks.verify import VerifyError, verify

__all__ = [
    "MemoryStats",
    "Mismatch",
    "Report",
    "TimingStats",
    "VerifyError",
    "assert_checkpoint_equivalent",
    "bypass_checkpointing",
    "check_checkpoint_equivalence",
    "inputs",
    "tensors",
    "verify",
]
