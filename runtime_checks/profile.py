"""Measured trade-off of checkpointing, region by region.

``profile(model, inputs)`` runs one training step with every checkpoint
bypassed and ``torch.autograd.graph.saved_tensors_hooks`` counting what
autograd saves for backward, each storage once (parameters and buffers
excluded), attributed to the innermost candidate region running at the time.
The inputs each candidate receives are recorded too: non-reentrant
checkpointing keeps exactly those alive (with the RNG state) while dropping
what the region saved. A few forward-only passes then time each region:
that forward is what checkpointing recomputes during backward.

The memory figures are kept per storage group (which regions save a storage,
which keep it as an input, whether code outside every region saves it), so
that the planner can say exactly which bytes stay resident for any set of
checkpointed regions (``runtime_checks.plan``). Cost: one training step
plus ``repeats + 1`` forward passes.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from runtime_checks import bypass
from runtime_checks._measure import _loss, _storage, _tensors, preserved, storage_ptrs
from runtime_checks.snapshot import seed_everything
from runtime_checks.verify import VerifyError, _fresh_inputs, _resolve_device

__all__ = ["Profile", "Region", "StorageGroup", "default_candidates", "preserved", "profile", "storage_ptrs"]


@dataclass(frozen=True)
class Region:
    """One candidate region: a submodule path (or ``a.0..a.3``, consecutive children of an ``nn.Sequential``).

    ``saved_bytes``: bytes autograd saves for backward while this region runs
    uncheckpointed (each storage counted once, in the first region that saves it).
    ``kept_bytes``: what checkpointing it keeps instead (its tensor inputs and
    the RNG state). ``recompute_s``: median forward time over the repeats (the
    recompute cost in backward), ``recompute_noise_s`` their median absolute
    deviation. ``checkpointed``: the model already checkpoints this region.
    ``unsafe``: why checkpointing it changes results (BatchNorm in train
    mode), else ``""``.
    """

    name: str
    saved_bytes: int
    kept_bytes: int
    recompute_s: float
    recompute_noise_s: float
    calls: int = 1
    checkpointed: bool = False
    unsafe: str = ""
    container: str = ""

    @property
    def net_bytes(self) -> int:
        """Bytes checkpointing this region alone frees (saved minus kept, inputs saved elsewhere not double-counted)."""
        return self.saved_bytes - self.kept_bytes


@dataclass(frozen=True)
class StorageGroup:
    """Storages that share one fate: saved by ``saved_by`` regions, kept as input by ``kept_by``, or by code outside."""

    nbytes: int
    saved_by: frozenset[int]
    kept_by: frozenset[int]
    outside: bool


@dataclass(frozen=True)
class Profile:
    """What a step holds for backward and what each candidate region costs.

    ``total_saved_bytes``: activation bytes saved for backward with no region
    checkpointed. ``peak_bytes``/``peak_kind``: on CUDA ``max_memory_allocated``
    over the step (``"cuda_max_memory_allocated"``); on CPU the saved-tensor
    accounting (``"saved_tensor_accounting"``, activation bytes only).
    ``rng_bytes``: the RNG state each checkpointed region stashes.
    ``sequential``: per container of candidates, whether it is an
    ``nn.Sequential`` whose own forward runs (segments can be cut there).
    """

    regions: tuple[Region, ...]
    groups: tuple[StorageGroup, ...]
    total_saved_bytes: int
    step_s: float
    peak_bytes: int
    peak_kind: str
    rng_bytes: int
    device: str
    repeats: int
    model_checkpointed: tuple[str, ...] = ()
    sequential: dict[str, bool] = field(default_factory=dict)

    def region(self, name: str) -> Region:
        for r in self.regions:
            if r.name == name:
                return r
        raise KeyError(name)


# ----------------------------------------------------------------------------- candidates
def default_candidates(model: torch.nn.Module) -> list[str]:
    """Each direct child of each outermost ``ModuleList``/``Sequential`` holding two or more modules.

    Children without parameters (activations, dropout) are skipped: they are
    cheap ops, not blocks. Containers inside a candidate are not descended into.
    """
    out: list[str] = []
    taken: list[str] = []
    for name, mod in model.named_modules():
        if any(name == t or name.startswith(t + ".") for t in taken):
            continue
        if isinstance(mod, (torch.nn.ModuleList, torch.nn.Sequential)) and mod is not model and len(mod) >= 2:
            kids = [(f"{name}.{k}" if name else k, c) for k, c in mod.named_children()]
            blocks = [n for n, c in kids if any(True for _ in c.parameters())]
            if len(blocks) >= 2:
                out.extend(blocks)
                taken.append(name)
    return out


def _train_batchnorm(mod: torch.nn.Module) -> str:
    for sub_name, sub in mod.named_modules():
        if isinstance(sub, torch.nn.modules.batchnorm._NormBase) and sub.training and sub.track_running_stats:
            where = f" ({sub_name})" if sub_name else ""
            return f"{type(sub).__name__}{where} in train mode updates its running stats again on recompute"
    return ""


# ----------------------------------------------------------------------------- measurement
class _Recorder:
    """Forward hooks on the candidate modules: which region runs, what it receives, how long it takes."""

    def __init__(self, modules: list[tuple[str, torch.nn.Module]], sync: Callable[[], None]) -> None:
        self.modules = modules
        self.sync = sync
        self.stack: list[int] = []
        self.inputs: dict[int, set[int]] = {}
        self.sizes: dict[int, int] = {}
        self.hold: list[torch.Tensor] = []  # keeps input storages alive: data_ptr stays unique
        self.started: dict[int, float] = {}
        self.times: dict[int, float] = {}
        self.calls: dict[int, int] = {}
        self.record_inputs = False

    @contextlib.contextmanager
    def hooks(self) -> Iterator[None]:
        handles = []
        try:
            for i, (_, mod) in enumerate(self.modules):
                handles.append(mod.register_forward_pre_hook(self._pre(i), with_kwargs=True))
                handles.append(mod.register_forward_hook(self._post(i), always_call=True))
            yield
        finally:
            for h in handles:
                h.remove()

    def _pre(self, i: int) -> Callable[..., None]:
        def pre(_m: Any, args: Any, kwargs: Any) -> None:
            if self.record_inputs:
                for t in _tensors((args, kwargs)):
                    st = _storage(t)
                    if st is not None and st[0] and not isinstance(t, torch.nn.Parameter):
                        self.inputs.setdefault(i, set()).add(st[0])
                        self.sizes[st[0]] = st[1]
                        self.hold.append(t)
            self.calls[i] = self.calls.get(i, 0) + 1
            self.stack.append(i)
            self.sync()
            self.started[i] = time.perf_counter()

        return pre

    def _post(self, i: int) -> Callable[..., None]:
        def post(_m: Any, _args: Any, _out: Any) -> None:
            self.sync()
            self.times[i] = self.times.get(i, 0.0) + time.perf_counter() - self.started.pop(i, time.perf_counter())
            if self.stack and self.stack[-1] == i:
                self.stack.pop()

        return post


def profile(
    model: torch.nn.Module,
    inputs: Any,
    *,
    candidates: Sequence[str] | None = None,
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
    repeats: int = 3,
    seed: int = 0,
) -> Profile:
    """Measure, for each candidate region, the bytes checkpointing it frees and the time it costs.

    ``candidates``: module paths (default ``default_candidates(model)`` plus
    the regions the model already checkpoints). ``inputs``: a tensor, a
    tuple of positional arguments or a dict of keyword arguments.
    ``loss_fn(outputs) -> scalar`` replaces the default loss (a seeded random
    projection of every floating-point output). The model's checkpointing is
    bypassed while measuring; parameters, buffers, ``.grad`` and RNG states
    are left as found.
    """
    if repeats < 1:
        raise VerifyError(f"repeats must be >= 1, got {repeats!r}")
    device = _resolve_device(model, None)
    use_cuda = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if use_cuda else (lambda: None)
    param_ptrs = storage_ptrs(model)
    with preserved(model):
        names = list(candidates) if candidates is not None else default_candidates(model)
        # Warm-up forward: first-call costs off the timings, the regions the model checkpoints
        # itself, and which nn.Sequential containers run as a whole (a segment can be cut there).
        called: set[str] = set()
        with bypass.bypass_checkpointing(model) as own, torch.enable_grad(), _container_calls(model, names, called):
            seed_everything(seed, use_cuda)
            args, kwargs, _ = _fresh_inputs(inputs, device, None)
            model(*args, **kwargs)
        own_names = tuple(dict.fromkeys(own))
        for n in own_names:
            if n not in names and _submodule(model, n) is not None and not _overlaps(n, names):
                names.append(n)
        modules = []
        for n in names:
            mod = _submodule(model, n)
            if mod is None:
                raise VerifyError(f"candidates: model {type(model).__name__} has no submodule {n!r}")
            modules.append((n, mod))
        if not modules:
            raise VerifyError(
                f"no candidate regions in {type(model).__name__}: it has no ModuleList/Sequential of blocks; pass candidates="
            )
        rec = _Recorder(modules, sync)
        saved_by: dict[int, set[int]] = {}
        outside: set[int] = set()
        sizes: dict[int, int] = {}
        keep: list[torch.Tensor] = []

        def pack(t: torch.Tensor) -> torch.Tensor:
            st = _storage(t)
            if st is not None and st[0] and st[0] not in param_ptrs:
                sizes[st[0]] = st[1]
                keep.append(t)
                if rec.stack:
                    saved_by.setdefault(st[0], set()).add(rec.stack[-1])
                else:
                    outside.add(st[0])
            return t

        # One measured training step.
        if use_cuda:
            sync()
            torch.cuda.reset_peak_memory_stats(device)
        with bypass.bypass_checkpointing(model), rec.hooks(), torch.enable_grad():
            seed_everything(seed, use_cuda)
            args, kwargs, _ = _fresh_inputs(inputs, device, None)
            rec.record_inputs = True
            start = time.perf_counter()
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                out = model(*args, **kwargs)
            rec.record_inputs = False
            loss = _loss(out, loss_fn, seed)
            if loss.requires_grad:
                loss.backward()
            sync()
            step_s = time.perf_counter() - start
        peak = int(torch.cuda.max_memory_allocated(device)) if use_cuda else sum(sizes.values())
        calls = dict(rec.calls)
        del out, loss, keep
        # Forward-only passes: what each region's recompute costs.
        samples: dict[int, list[float]] = {i: [] for i in range(len(modules))}
        for _ in range(repeats):
            rec.times.clear()
            with bypass.bypass_checkpointing(model), rec.hooks(), torch.enable_grad():
                seed_everything(seed, use_cuda)
                args, kwargs, _ = _fresh_inputs(inputs, device, None)
                out = model(*args, **kwargs)
                sync()
                del out
            for i in samples:
                samples[i].append(rec.times.get(i, 0.0))
        input_sizes = dict(rec.sizes)
        kept_by: dict[int, set[int]] = {}
        for i, ptrs in rec.inputs.items():
            for ptr in ptrs:
                kept_by.setdefault(ptr, set()).add(i)
        rec.hold.clear()

    rng_bytes = torch.get_rng_state().numel() + (torch.cuda.get_rng_state(device).numel() if use_cuda else 0)
    all_sizes = {**input_sizes, **sizes}
    signature: dict[tuple[frozenset[int], frozenset[int], bool], int] = {}
    for ptr in set(saved_by) | outside | set(kept_by):
        if ptr in param_ptrs:
            continue
        key = (frozenset(saved_by.get(ptr, ())), frozenset(kept_by.get(ptr, ())), ptr in outside)
        signature[key] = signature.get(key, 0) + all_sizes.get(ptr, 0)
    groups = tuple(StorageGroup(nbytes, s, k, o) for (s, k, o), nbytes in sorted(signature.items(), key=lambda kv: -kv[1]))
    regions = []
    own_set = set(own_names)
    for i, (n, mod) in enumerate(modules):
        saved = sum(sizes[p] for p, rs in saved_by.items() if rs == {i} or (i in rs and min(rs) == i))
        kept = sum(all_sizes.get(p, 0) for p in rec.inputs.get(i, ())) + rng_bytes
        times = samples[i]
        regions.append(
            Region(
                name=n,
                saved_bytes=saved,
                kept_bytes=kept,
                recompute_s=statistics.median(times),
                recompute_noise_s=_spread(times),
                calls=calls.get(i, 0),
                checkpointed=n in own_set,
                unsafe=_train_batchnorm(mod),
                container=n.rpartition(".")[0],
            )
        )
    return Profile(
        regions=tuple(regions),
        groups=groups,
        total_saved_bytes=sum(sizes.values()),
        step_s=step_s,
        peak_bytes=peak,
        peak_kind="cuda_max_memory_allocated" if use_cuda else "saved_tensor_accounting",
        rng_bytes=rng_bytes,
        device=str(device),
        repeats=repeats,
        model_checkpointed=own_names,
        sequential={r.container: r.container in called for r in regions},
    )


@contextlib.contextmanager
def _container_calls(model: torch.nn.Module, names: Sequence[str], called: set[str]) -> Iterator[None]:
    """Note the ``nn.Sequential`` parents of ``names`` whose own forward runs (not just iterated over)."""
    handles = []
    try:
        for parent in {n.rpartition(".")[0] for n in names}:
            mod = _submodule(model, parent) if parent else model
            if isinstance(mod, torch.nn.Sequential):
                handles.append(mod.register_forward_pre_hook(lambda *_a, _p=parent: called.add(_p)))
        yield
    finally:
        for h in handles:
            h.remove()


def _spread(samples: Sequence[float]) -> float:
    """Median absolute deviation: one slow repeat on a loaded machine does not swamp it (nan for one sample)."""
    if len(samples) < 2:
        return math.nan
    mid = statistics.median(samples)
    return statistics.median(abs(s - mid) for s in samples)


def _submodule(model: torch.nn.Module, name: str) -> torch.nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def _overlaps(name: str, names: Sequence[str]) -> bool:
    return any(name.startswith(n + ".") or n.startswith(name + ".") for n in names)
