"""Put a plan on a model, take it off again, and measure what it really does.

``apply_plan(model, plan)`` checkpoints exactly the plan's regions with
``use_reentrant=False``: a region's ``forward`` becomes an instance attribute
that calls ``torch.utils.checkpoint.checkpoint``; a segment ``a.0..a.3`` of an
``nn.Sequential`` replaces that container's ``forward`` with a loop that
checkpoints the segment as one call (``checkpoint_seq`` style). The handle's
``remove()`` restores every ``forward`` it replaced.

``measure_plan(model, inputs, plan)`` applies the plan, counts the activation
bytes held between forward and backward (saved-tensor hooks and the inputs
each checkpoint call holds, each storage once, plus the RNG state each
region stashes), times full steps, reads CUDA
peak memory where the model runs on CUDA, runs ``verify`` on the planned
configuration, and removes the plan.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.utils.checkpoint

from runtime_checks.plan import Plan, PlanError
from runtime_checks.profile import _loss, _storage, _tensors, preserved, storage_ptrs
from runtime_checks.report import Report
from runtime_checks.snapshot import seed_everything
from runtime_checks.verify import _fresh_inputs, _resolve_device

__all__ = ["PlanHandle", "PlanMeasurement", "apply_plan", "measure_plan"]

_ABSENT = object()


class PlanHandle:
    """What ``apply_plan`` changed; ``remove()`` undoes it (idempotent)."""

    def __init__(self, regions: tuple[str, ...]) -> None:
        self.regions = regions
        self.calls = 0  # checkpoint calls made through the plan's wrappers
        # While recording: the tensors each checkpoint call holds to rerun its function (its
        # inputs, also keyword and nested ones, which no saved-tensor hook sees).
        self.recording: list[Any] | None = None
        self._saved: list[tuple[torch.nn.Module, Any]] = []

    def _replace(self, mod: torch.nn.Module, forward: Callable[..., Any]) -> None:
        self._saved.append((mod, mod.__dict__.get("forward", _ABSENT)))
        mod.__dict__["forward"] = forward

    def _enter_region(self, args: Any) -> None:
        self.calls += 1
        if self.recording is not None:
            self.recording.append(args)

    def remove(self) -> None:
        for mod, previous in reversed(self._saved):
            if previous is _ABSENT:
                mod.__dict__.pop("forward", None)
            else:
                mod.__dict__["forward"] = previous
        self._saved.clear()

    def __enter__(self) -> PlanHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def apply_plan(model: torch.nn.Module, plan: Plan | Sequence[str]) -> PlanHandle:
    """Checkpoint exactly the regions of ``plan`` (non-reentrant); returns a handle whose ``remove()`` undoes it."""
    regions = tuple(plan.regions if isinstance(plan, Plan) else plan)
    own = plan.model_checkpointed if isinstance(plan, Plan) else ()
    if own:
        raise PlanError(
            f"the model already checkpoints {', '.join(own[:3])}{' ...' if len(own) > 3 else ''}: turn its own "
            "checkpointing off (gradient_checkpointing_disable(), set_grad_checkpointing(False)) before apply_plan, "
            "or the plan's regions would be checkpointed twice and the others not as planned"
        )
    handle = PlanHandle(regions)
    segments: dict[str, list[tuple[int, int]]] = {}
    try:
        for name in regions:
            if ".." in name:
                first, _, last = name.partition("..")
                parent, _, a = first.rpartition(".")
                parent2, _, b = last.rpartition(".")
                container = _get(model, parent, name)
                if parent != parent2 or not isinstance(container, torch.nn.Sequential):
                    raise PlanError(f"plan region {name!r} is not a segment of one nn.Sequential")
                keys = list(container._modules)
                if a not in keys or b not in keys:
                    raise PlanError(f"plan region {name!r}: {parent!r} has no children {a!r}..{b!r}")
                segments.setdefault(parent, []).append((keys.index(a), keys.index(b)))
                continue
            mod = _get(model, name, name)
            inner = mod.forward

            def forward(*args: Any, __inner: Any = inner, **kwargs: Any) -> Any:
                handle._enter_region((args, kwargs))
                return torch.utils.checkpoint.checkpoint(__inner, *args, use_reentrant=False, **kwargs)

            handle._replace(mod, forward)
        for parent, spans in segments.items():
            container = _get(model, parent, parent)
            handle._replace(container, _segmented(container, sorted(spans), handle))
    except BaseException:
        handle.remove()
        raise
    return handle


def _get(model: torch.nn.Module, path: str, region: str) -> torch.nn.Module:
    if not path:
        return model
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise PlanError(f"plan region {region!r}: {type(model).__name__} has no submodule {path!r}") from None


def _segmented(functions: torch.nn.Sequential, spans: list[tuple[int, int]], handle: PlanHandle) -> Callable[[Any], Any]:
    """A forward for ``functions`` that runs each span ``(start, end)`` under one checkpoint."""
    items = list(functions)

    def run_span(start: int, end: int) -> Callable[[Any], Any]:
        # ``items`` (a list, not a module), ``start`` and ``end`` as closure cells:
        # region_namer names this ``first..last``.
        def segment(x: Any) -> Any:
            for j in range(start, end + 1):
                x = items[j](x)
            return x

        return segment

    runs = {start: (end, run_span(start, end)) for start, end in spans}

    def forward(x: Any) -> Any:
        j = 0
        while j < len(items):
            if j in runs:
                end, seg = runs[j]
                handle._enter_region(x)
                x = torch.utils.checkpoint.checkpoint(seg, x, use_reentrant=False)
                j = end + 1
            else:
                x = items[j](x)
                j += 1
        return x

    return forward


# ----------------------------------------------------------------------------- measuring
@dataclass(frozen=True)
class PlanMeasurement:
    """Predicted against measured for one plan.

    ``measured_bytes``: activation bytes held between forward and backward:
    what autograd saves (saved-tensor hooks) and the inputs each checkpoint
    call holds by reference, each storage once, parameters excluded, plus
    ``rng_bytes`` per checkpointed call. ``step_s``: median full step.
    ``cuda_peak_bytes``: ``max_memory_allocated`` over a step on CUDA, else ``None``.
    ``report``: ``verify`` on the planned configuration (``None`` if not run).
    """

    plan: Plan
    measured_bytes: int
    step_s: float
    step_noise_s: float
    cuda_peak_bytes: int | None
    report: Report | None

    @property
    def equivalent(self) -> bool | None:
        return None if self.report is None else self.report.equivalent


def measure_plan(
    model: torch.nn.Module,
    inputs: Any,
    plan: Plan,
    *,
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
    repeats: int = 3,
    check: bool = True,
    seed: int = 0,
    rng_bytes: int | None = None,
) -> PlanMeasurement:
    """Apply ``plan``, measure its activation memory and step time, verify it, and take it off again."""
    device = _resolve_device(model, None)
    use_cuda = device.type == "cuda"
    per_call_rng = rng_bytes if rng_bytes is not None else torch.get_rng_state().numel()
    with apply_plan(model, plan) as handle:
        with preserved(model):
            handle.recording = []
            held = _held_bytes(model, inputs, device, seed, handle)
            handle.recording = None
            calls = handle.calls
            times, peak = _steps(model, inputs, device, loss_fn, repeats, seed)
        report = None
        if check:
            from runtime_checks.verify import verify

            report = verify(model, inputs, loss_fn=loss_fn, seed=seed)
    return PlanMeasurement(
        plan=plan,
        measured_bytes=held + per_call_rng * calls,
        step_s=statistics.median(times),
        step_noise_s=statistics.stdev(times) if len(times) > 1 else 0.0,
        cuda_peak_bytes=peak if use_cuda else None,
        report=report,
    )


def _held_bytes(model: torch.nn.Module, inputs: Any, device: torch.device, seed: int, handle: PlanHandle) -> int:
    """Bytes held for backward after a forward, each storage once, parameters and buffers excluded.

    What autograd saves (saved-tensor hooks) plus what each checkpoint call holds by
    reference to rerun its function (its inputs, recorded by the plan's wrappers).
    """
    params = storage_ptrs(model)
    sizes: dict[int, int] = {}
    keep: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = _storage(t)
        if st is not None and st[0] and st[0] not in params:
            sizes[st[0]] = st[1]
            keep.append(t)
        return t

    seed_everything(seed, device.type == "cuda")
    args, kwargs, _ = _fresh_inputs(inputs, device, None)
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(*args, **kwargs)
    for t in _tensors(handle.recording or []):
        st = _storage(t)
        if st is not None and st[0] and st[0] not in params:
            sizes[st[0]] = st[1]
    del out
    return sum(sizes.values())


def _steps(
    model: torch.nn.Module, inputs: Any, device: torch.device, loss_fn: Any, repeats: int, seed: int
) -> tuple[list[float], int]:
    use_cuda = device.type == "cuda"
    times: list[float] = []
    peak = 0
    for i in range(repeats + 1):  # the first step warms up and is not timed
        if use_cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        seed_everything(seed, use_cuda)
        args, kwargs, _ = _fresh_inputs(inputs, device, None)
        start = time.perf_counter()
        with torch.enable_grad():
            loss = _loss(model(*args, **kwargs), loss_fn, seed)
            if loss.requires_grad:
                loss.backward()
        if use_cuda:
            torch.cuda.synchronize(device)
            peak = max(peak, int(torch.cuda.max_memory_allocated(device)))
        if i:
            times.append(time.perf_counter() - start)
        for p in model.parameters():
            p.grad = None
    return times, peak
