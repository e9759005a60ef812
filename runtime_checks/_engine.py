"""The verify procedure itself: one run from the common starting point, the whole sequence, attribution.

``_Engine.run`` is the order of work that ``verify.py``'s docstring lays out;
``_Engine.one_run`` is one forward+backward. Comparison lives in ``_compare.py``,
argument handling and input copies in ``_setup.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import warnings
import zlib
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch

from runtime_checks import _state, bypass, hooks
from runtime_checks._compare import (
    _ABSENT, Key, _compare, _keep_only, _noise, _recompute_drift, _Run, _same, _state_notes, _Tolerance,
)
from runtime_checks._setup import (
    VerifyError, _checked_unpack, _flatten, _fresh_inputs, _qualname, _rng_state_bytes, _storage_ptrs, _wrapped_modules,
)
from runtime_checks.census import Census, localise_by_owner, owning_region
from runtime_checks.recompute import ValueRecorder
from runtime_checks.report import Divergence, MemoryStats, Mismatch, RegionCensus, Report, TimingStats
from runtime_checks.snapshot import ModelState, PyState, RngState, seed_everything

__all__: list[str] = []


class _Engine:
    def __init__(
        self,
        model: torch.nn.Module,
        inputs: Any,
        mstate: ModelState,
        pystate: PyState,
        device: torch.device,
        dtype: torch.dtype | None,
        loss_fn: Callable[[Any], torch.Tensor] | None,
        wrap: list[torch.nn.Module],
        ckpt_kwargs: dict[str, Any],
        rtol: float | None,
        atol: float | None,
        seed: int,
    ) -> None:
        self.model = model
        self.inputs = inputs
        self.mstate = mstate
        self.pystate = pystate
        self.device = device
        self.dtype = dtype
        self.loss_fn = loss_fn
        self.wrap = wrap
        self.ckpt_kwargs = ckpt_kwargs
        self.rtol = rtol
        self.atol = atol
        self.seed = seed
        self.namer = bypass.region_namer(model)
        self.composable = bypass.composable_regions(model)
        self.projections: dict[tuple[str, tuple[int, ...], torch.dtype], torch.Tensor] = {}
        self.use_cuda = device.type == "cuda"
        self.param_ptrs: set[int] = set()
        self.hook_counter = hooks.HookCounter(model)
        self.allow_no_checkpoint = False
        self.autocast: torch.dtype | None = None

    # -- one run ---------------------------------------------------------------
    def one_run(
        self,
        mode: str,
        keep: frozenset[str] = frozenset(),
        *,
        measure: bool = False,
        forward_only: bool = False,
        census: Census | None = None,
        count_hooks: bool = False,
        recorder: ValueRecorder | None = None,
    ) -> _Run:
        """One forward+backward from the common starting point.

        ``measure=True`` counts saved tensors with ``saved_tensors_hooks``.
        Such hooks change what non-reentrant checkpoint recomputes on torch
        2.13 and 2.14 (MultiheadAttention then fails torch's own determinism
        check), so a run with checkpointing active is never measured and
        compared at once: its memory comes from an extra ``forward_only`` run.
        """
        self.mstate.reset_for_run()
        self.pystate.restore()
        seed_everything(self.seed, self.use_cuda)
        self.param_ptrs = _storage_ptrs([p for _, p in self.mstate.params]) | _storage_ptrs(
            [mod._buffers[b] for mod, b, _ in self.mstate.buffers if mod._buffers.get(b) is not None]
        )
        namer = census.counting_namer(self.namer) if census is not None else self.namer
        session = _state.Session(namer=namer, mode=mode, keep=keep)
        result = _Run()
        args, kwargs, leaves = _fresh_inputs(self.inputs, self.device, self.dtype)
        seen: dict[int, int] = {}
        per_region: dict[str, int] = {}

        def pack(t: torch.Tensor) -> tuple[torch.Tensor, int]:
            try:
                storage = t.untyped_storage()
                ptr, nbytes = storage.data_ptr(), storage.nbytes()
            except Exception:  # tensor subclasses without storage: not countable
                return t, t._version
            if ptr and ptr not in self.param_ptrs and ptr not in seen:
                seen[ptr] = nbytes
                if session.stack:
                    per_region[session.stack[-1]] = per_region.get(session.stack[-1], 0) + nbytes
            return t, t._version

        unpack = _checked_unpack
        if measure:
            session.measure_hooks = (pack, unpack)

        if self.use_cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        # Installed in baseline runs too: there the dispatch bypasses them, but
        # names their regions for the per-region memory figures.
        wrapped = self.wrap
        _state.set_session(session)
        outputs: Any = None
        with (
            self.hook_counter.counting() if count_hooks else contextlib.nullcontext(Counter()) as hook_counts,
            census.watching() if census is not None else contextlib.nullcontext(),
            recorder.watching() if recorder is not None else contextlib.nullcontext(),
            warnings.catch_warnings(record=True) as caught,
            _wrapped_modules(wrapped, self.ckpt_kwargs),
            bypass.composable_control(self.composable, session),
        ):
            warnings.simplefilter("always")
            start = time.perf_counter()
            try:
                with torch.enable_grad():
                    with (
                        torch.autograd.graph.saved_tensors_hooks(pack, unpack) if measure else contextlib.nullcontext(),
                        self._autocast(),
                    ):
                        outputs = self.model(*args, **kwargs)
                    if not forward_only:
                        with self._autocast():
                            loss = self._loss(outputs)
                        if census is not None:
                            census.backward()
                        if recorder is not None:
                            recorder.backward()
                        if loss.requires_grad:
                            loss.backward()
                if self.use_cuda:
                    torch.cuda.synchronize(self.device)
            except VerifyError:
                raise
            except Exception as exc:  # noqa: BLE001 - a model error is a result here
                result.error = exc
            result.seconds = time.perf_counter() - start
        _state.set_session(None)
        result.warnings = [str(w.message) for w in caught]
        result.regions = list(session.regions)
        result.fingerprints = session.fingerprints or {}
        result.rng_stashes = session.rng_stashes
        result.hook_counts = hook_counts
        result.saved_bytes = sum(seen.values())
        result.per_region = per_region
        if forward_only:
            outputs = None  # drop the graph: nothing runs backward through it
            return result
        if self.use_cuda:
            result.cuda_max = int(torch.cuda.max_memory_allocated(self.device))
        if result.error is None:
            for name, t in _flatten(outputs, "output"):
                result.tensors[("output", name)] = t.detach()
        for name, p in self.mstate.params:
            result.tensors[("grad", name)] = p.grad
            p.grad = None
        for name, leaf in leaves:
            result.tensors[("grad", name)] = leaf.grad
        for name, value in self.mstate.buffer_values().items():
            result.tensors[("buffer", name)] = value
        streams = RngState.capture().streams()
        streams.update(self.pystate.generator_states())
        for name, value in streams.items():
            result.other[("rng", name)] = value
        for name, value in self.pystate.scalar_values().items():
            result.other[("state", name)] = value
        return result

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast)

    def _loss(self, outputs: Any) -> torch.Tensor:
        if self.loss_fn is not None:
            loss = self.loss_fn(outputs)
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise VerifyError(
                    f"loss_fn {_qualname(self.loss_fn)!r} must return a scalar tensor, got "
                    f"{type(loss).__name__}{tuple(loss.shape) if isinstance(loss, torch.Tensor) else ''}"
                )
            return loss.reshape(())
        total: torch.Tensor | None = None
        for name, t in _flatten(outputs, "output"):
            if not t.is_floating_point():
                continue
            acc = torch.float64 if t.dtype == torch.float64 else torch.float32
            key = (name, tuple(t.shape), acc)
            r = self.projections.get(key)
            if r is None:
                g = torch.Generator().manual_seed((self.seed * 1_000_003 + zlib.crc32(name.encode())) % 2**63)
                r = torch.randn(t.shape, generator=g, dtype=acc).to(t.device)
                self.projections[key] = r
            term = (t.to(acc) * r).sum()
            total = term if total is None else total + term
        if total is None:
            raise VerifyError("the model returned no floating-point tensor; pass loss_fn=")
        return total

    # -- the whole procedure ------------------------------------------------------
    def run(self, localize: bool) -> Report:
        # First a forward-only checkpointed run that counts saved tensors: it
        # is never compared, and it takes the one-off costs of a first call
        # (lazy imports and initialisation, allocator growth) off the timed runs.
        ckpt_mem = self.one_run("record", measure=True, forward_only=True)
        # Nothing is checkpointed in the baseline, so counting hooks are harmless there.
        base = self.one_run("bypass", measure=True, count_hooks=True)
        if base.error is not None:
            raise base.error
        base_seconds = base.seconds
        census = Census(self.model)
        ckpt = self.one_run("record", census=census, count_hooks=True)
        tol = _Tolerance(self.rtol, self.atol, {}, len(ckpt.regions), self.autocast)
        mismatches = _compare(ckpt, base, tol) + _recompute_drift(ckpt_mem, ckpt, tol)
        state_diffs = {
            key for key, value in ckpt.other.items()
            if key[0] == "state" and ckpt.error is None and not _same(value, base.other.get(key, _ABSENT))
        }
        noisy: tuple[str, ...] = ()
        explainable = [m for m in mismatches if m.kind not in ("error", "recompute")]  # the baseline never raised
        if explainable or state_diffs:
            # Only a difference needs explaining: run the baseline a second
            # time and never report what it shows against itself. (An
            # equivalent model skips this run, which keeps verify near the
            # cost of the two steps it replays.)
            suspects = {("grad" if m.kind in ("missing_grad", "unexpected_grad") else m.kind, m.name) for m in explainable}
            _keep_only(ckpt, suspects | state_diffs)
            base2 = self.one_run("bypass")
            if base2.error is not None:
                raise base2.error
            base_seconds = min(base_seconds, base2.seconds)
            noise = _noise(base2, base, suspects | state_diffs)
            del base2
            tol = _Tolerance(self.rtol, self.atol, noise, len(ckpt.regions), self.autocast)
            noisy = tuple(sorted(name for (kind, name), n in noise.items() if n.exceeds_default))
            errors = [m for m in mismatches if m.kind in ("error", "recompute")]
            mismatches = errors + [m for m in _compare(ckpt, base, tol, suspects) if m.kind != "error"]
        regions = list(ckpt.regions)
        mismatches, divergences = self._attribute(regions, mismatches, census.result(regions), base, tol, localize)
        self.mstate.reset_for_run(full_check=True)  # also detects a parameter written by any run
        notes = [f"only in the checkpointed run: warning: {w}" for w in dict.fromkeys(ckpt.warnings) if w not in base.warnings]
        if ckpt.error is None:
            notes[:0] = _state_notes(ckpt, base, state_diffs, tol)
        rng_bytes = ckpt_mem.rng_stashes * _rng_state_bytes(self.use_cuda)
        memory = MemoryStats(
            saved_bytes_checkpointed=ckpt_mem.saved_bytes + rng_bytes if ckpt_mem.error is None else -1,
            rng_state_bytes=rng_bytes if ckpt_mem.error is None else 0,
            saved_bytes_baseline=base.saved_bytes,
            per_region=dict(base.per_region),
            cuda_max_allocated=(
                {"checkpointed": ckpt.cuda_max or 0, "baseline": base.cuda_max or 0} if self.use_cuda else None
            ),
        )
        timing = TimingStats(checkpointed_s=ckpt.seconds, baseline_s=base_seconds)
        ordered = tuple(sorted(mismatches, key=Mismatch.sort_key))
        return Report(
            equivalent=not ordered and (bool(regions) or self.allow_no_checkpoint),
            mismatches=ordered,
            regions=tuple(regions),
            memory=memory,
            timing=timing,
            device=str(self.device),
            noisy=noisy,
            notes=tuple(notes[:8]),
            census=tuple(
                # A backward that raised stopped part-way: its recompute counts mean nothing.
                dataclasses.replace(c, recomputes=None) if ckpt.error is not None else c
                for c in census.result(regions)
            ),
            recompute=divergences,
            side_effects=hooks.differences(base.hook_counts, ckpt.hook_counts) if ckpt.error is None else (),
            allow_no_checkpoint=self.allow_no_checkpoint,
        )

    def _attribute(
        self,
        regions: list[str],
        mismatches: list[Mismatch],
        census: tuple[RegionCensus, ...],
        base: _Run,
        tol: _Tolerance,
        localize: bool,
    ) -> tuple[list[Mismatch], tuple[Divergence, ...]]:
        """The region behind each mismatch: by owner (no run), by one value-check run, then by group testing."""
        if not mismatches or not regions:
            return mismatches, ()
        owned, rest = localise_by_owner(mismatches, regions, census)
        divergences: tuple[Divergence, ...] = ()
        if rest and (localize or len(regions) == 1):
            # One checkpointed run comparing each region's forward with its own
            # recompute: names the op, and localises every region at once.
            divergences = self._recompute_values(regions)
        if len(regions) == 1:
            return [dataclasses.replace(m, region=regions[0]) for m in owned + rest], divergences
        if rest and divergences:
            rest = _explain_errors(_blame(rest, regions, divergences), divergences)
        unexplained = [m for m in rest if m.region is None]
        if unexplained and localize:
            found = iter(self._localise(regions, unexplained, base, tol))
            rest = [next(found) if m.region is None else m for m in rest]
        return owned + rest, divergences

    def _recompute_values(self, regions: list[str]) -> tuple[Divergence, ...]:
        recorder = ValueRecorder(self.model, regions)
        self.one_run("record", recorder=recorder)
        return recorder.divergences()

    def _localise(self, regions: list[str], mismatches: list[Mismatch], base: _Run, tol: _Tolerance) -> list[Mismatch]:
        """Group testing over regions: which subsets, checkpointed alone, reproduce which mismatches."""
        culprits: dict[tuple[str, ...], set[Key]] = {}

        # A recompute mismatch names its region already.
        wanted = {(m.kind, m.name) for m in mismatches if m.kind != "recompute"}
        # Gradients and buffers are compared under their plain names; errors too.
        only = {("grad" if k in ("missing_grad", "unexpected_grad") else k, n) for k, n in wanted}

        def keys_of(subset: tuple[str, ...]) -> set[Key]:
            run = self.one_run("bypass", keep=frozenset(subset))
            return {(m.kind, m.name) for m in _compare(run, base, tol, only)} & wanted

        def search(subset: tuple[str, ...], keys: set[Key]) -> None:
            if not keys:
                return
            if len(subset) == 1:
                culprits[subset] = keys
                return
            half = len(subset) // 2
            left, right = subset[:half], subset[half:]
            kl, kr = keys_of(left), keys_of(right)
            if not kl and not kr:
                culprits[subset] = keys  # only the combination breaks equivalence
                return
            search(left, kl)
            search(right, kr)

        search(tuple(regions), wanted)
        everything = ", ".join("+".join(s) for s in culprits) or None
        out = []
        for m in mismatches:
            if m.kind == "recompute":
                out.append(m)
                continue
            owners = ["+".join(s) for s, keys in culprits.items() if (m.kind, m.name) in keys]
            out.append(dataclasses.replace(m, region=", ".join(owners) if owners else everything))
        return out


def _blame(mismatches: list[Mismatch], regions: list[str], divergences: tuple[Divergence, ...]) -> list[Mismatch]:
    """Values the diverging regions explain: a value inside one of them is its; others are theirs jointly."""
    diverged = [d.region for d in divergences]
    out = []
    for m in mismatches:
        if m.kind == "error" or m.region is not None:
            out.append(m)
            continue
        owner = owning_region(m.name, regions)
        out.append(dataclasses.replace(m, region=owner if owner in diverged else ", ".join(diverged)))
    return out


def _explain_errors(mismatches: list[Mismatch], divergences: tuple[Divergence, ...]) -> list[Mismatch]:
    """An error is blamed on the region whose recompute diverged first (the advice names its op and line)."""
    if not divergences:
        return mismatches
    out = []
    for m in mismatches:
        if m.kind == "error":
            first = divergences[0]
            m = dataclasses.replace(m, region=m.region or first.region)
        out.append(m)
    return out
