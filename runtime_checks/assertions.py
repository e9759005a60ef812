"""Test helpers: assert equivalence for one input, or let hypothesis search for a counterexample."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed_decorator
from hypothesis.reporting import with_reporter
from hypothesis.strategies import SearchStrategy

from runtime_checks.report import Report
from runtime_checks.verify import verify

__all__ = [
    "CheckpointMismatchError",
    "assert_checkpoint_equivalent",
    "check_checkpoint_equivalence",
    "describe_inputs",
]


def assert_checkpoint_equivalent(model: Any, inputs: Any, **verify_kwargs: Any) -> Report:
    """``verify`` and raise ``AssertionError`` carrying the report unless equivalent; return the report."""
    report = verify(model, inputs, **verify_kwargs)
    if not report.equivalent:
        raise AssertionError("checkpointed model is not equivalent to its baseline\n" + str(report))
    return report


def describe_inputs(value: Any) -> str:
    """Shapes and dtypes of an input structure, e.g. ``(float32[2, 16], int64[2])``."""
    if isinstance(value, torch.Tensor):
        dt = str(value.dtype).replace("torch.", "")
        return f"{dt}{list(value.shape)}" + ("+grad" if value.requires_grad else "")
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {describe_inputs(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(describe_inputs(v) for v in value) + ")"
    return repr(value)


class CheckpointMismatchError(AssertionError):
    """Raised by ``check_checkpoint_equivalence``: the shrunk counterexample and its report."""

    def __init__(self, report: Report, inputs: str, hypothesis_seed: int) -> None:
        self.report = report
        self.inputs = inputs
        self.hypothesis_seed = hypothesis_seed
        super().__init__(
            "checkpointed model is not equivalent to its baseline\n"
            f"smallest failing input: {inputs}\n"
            f"reproduce: check_checkpoint_equivalence(..., hypothesis_seed={hypothesis_seed})\n{report}"
        )


def check_checkpoint_equivalence(
    model_or_factory: torch.nn.Module | Callable[[], torch.nn.Module],
    strategy: SearchStrategy[Any],
    *,
    max_examples: int = 20,
    hypothesis_seed: int | None = None,
    on_example: Callable[[int, Report], None] | None = None,
    **verify_kwargs: Any,
) -> None:
    """Let hypothesis draw ``inputs`` from ``strategy`` and verify each (deadline off).

    On failure raises ``CheckpointMismatchError`` (an ``AssertionError``) with
    the report for the shrunk failing input, its shapes and dtypes, and the
    hypothesis seed that reproduces the search (pass it back as
    ``hypothesis_seed=``). While searching and shrinking, regions are not
    localised (it multiplies the runs); the final report on the shrunk input
    is. ``on_example(i, report)`` is called after each example (progress bars).
    """
    model = model_or_factory
    if not isinstance(model, torch.nn.Module):
        model = model()  # one instance: verify leaves it exactly as it found it
    hseed = hypothesis_seed if hypothesis_seed is not None else int.from_bytes(os.urandom(4), "little")
    localize = verify_kwargs.pop("localize", True)
    failing: dict[str, Any] = {}
    counter = [0]

    @hypothesis_seed_decorator(hseed)
    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        # No explain phase: it reruns a failing model dozens of times to word
        # its explanation; the shrunk input and our report say enough.
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    )
    @given(strategy)
    def search(value: Any) -> None:
        report = verify(model, value, localize=False, **verify_kwargs)
        counter[0] += 1
        if on_example is not None:
            on_example(counter[0], report)
        if not report.equivalent:
            failing["value"] = value
            raise AssertionError(str(report))

    try:
        # Our message names the shrunk input's shapes; hypothesis' own print of
        # the tensors themselves would bury it.
        with with_reporter(lambda _message: None):
            search()
    except AssertionError:
        if "value" not in failing:
            raise
        value = failing["value"]
        report = verify(model, value, localize=localize, **verify_kwargs)
        raise CheckpointMismatchError(report, describe_inputs(value), hseed) from None
