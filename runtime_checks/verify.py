"""Checkpointed run versus bypassed run: outputs, gradients, buffers, RNG and state.

Order of work (memory: one stored set of gradients besides the live one):

1. snapshot everything (``snapshot.py``), take existing ``.grad`` aside;
1b. a forward-only checkpointed run counts its saved tensors (and warms up);
2. baseline run (every checkpoint bypassed; saved tensors counted): kept
   as the reference;
3. checkpointed run (the model as it is, regions recorded): compared;
4. only if something differs: a second baseline run gives the noise floor
   for the differing values, and what the baseline shows against itself is
   dropped;
6. if a difference remains and there are several regions, group-test
   subsets of regions (all others bypassed) to name the ones responsible;
7. restore everything, also when anything above raised.

Each run starts from the same parameters, buffers, Python state and seeded
RNG, so a hazard shows up as a difference and the baseline agrees with itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.utils.checkpoint

from runtime_checks import _state, bypass, hooks
from runtime_checks.census import Census, localise_by_owner, owning_region
from runtime_checks.recompute import ValueRecorder
from runtime_checks.report import Divergence, MemoryStats, Mismatch, RegionCensus, Report, TimingStats
from runtime_checks.snapshot import (
    ModelState,
    ParameterWriteError,
    PyState,
    RngState,
    SnapshotError,
    seed_everything,
)

__all__ = ["ParameterWriteError", "VerifyError", "verify"]

_DEFAULT_TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float16: (1e-3, 1e-5),
    torch.bfloat16: (1.6e-2, 1e-5),
    torch.float32: (1.3e-6, 1e-5),
    torch.float64: (1e-7, 1e-7),
    torch.complex64: (1.3e-6, 1e-5),
    torch.complex128: (1e-7, 1e-7),
}

# How many times the baseline's own run-to-run spread a difference may reach.
NOISE_MARGIN = 4.0

CheckpointSpec = Callable[[torch.nn.Module], bool] | type | str | Sequence[str]


class VerifyError(ValueError):
    """A usage error (bad argument); the message names the bad value."""


Key = tuple[str, str]  # (kind, name): kind in output/grad/buffer/rng/state


@dataclass
class _Run:
    tensors: dict[Key, torch.Tensor | None] = field(default_factory=dict)
    other: dict[Key, Any] = field(default_factory=dict)  # rng streams, scalar state
    error: BaseException | None = None
    seconds: float = 0.0
    saved_bytes: int = 0
    per_region: dict[str, int] = field(default_factory=dict)
    cuda_max: int | None = None
    warnings: list[str] = field(default_factory=list)
    regions: list[str] = field(default_factory=list)
    fingerprints: dict[tuple[str, int], list[Any]] = field(default_factory=dict)
    rng_stashes: int = 0
    hook_counts: Counter[hooks.HookKey] = field(default_factory=Counter)


def verify(
    model: torch.nn.Module | Callable[[], torch.nn.Module],
    inputs: Any,
    *,
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
    checkpoint: CheckpointSpec | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    seed: int = 0,
    localize: bool = True,
    checkpoint_kwargs: Mapping[str, Any] | None = None,
    snapshot_params: bool | Literal["disk"] = "disk",
    allow_no_checkpoint: bool = False,
    autocast: str | torch.dtype | None = None,
) -> Report:
    """Compare ``model`` as it checkpoints against the same model with checkpointing bypassed.

    ``model``: an ``nn.Module`` or a zero-argument factory returning one.
    ``inputs``: a tensor, a tuple/list of positional arguments or a dict of
    keyword arguments (nested containers allowed, non-tensors passed through).
    ``checkpoint``: for a model that does not checkpoint itself — a predicate
    on modules, a module class, a class name, or a list of submodule names;
    those submodules are checkpointed (``checkpoint_kwargs``, default
    ``use_reentrant=False``) in the checkpointed run only.
    ``loss_fn(outputs) -> scalar`` replaces the default loss, a seeded random
    projection of every floating-point output.
    ``rtol``/``atol`` replace the dtype defaults of ``torch.testing.assert_close``;
    either way a difference the baseline shows against itself is never reported.
    ``localize=False`` skips the search for the responsible regions.
    ``allow_no_checkpoint=True`` accepts a model in which no checkpoint
    region ran (by default that is not a pass: checkpointing is off).
    ``autocast="bf16"`` (or ``"fp16"``, or the torch dtype) runs forward and
    loss of both runs under ``torch.autocast`` on the run's device type, and
    compares with that dtype's tolerances.
    ``snapshot_params`` decides how a model that writes to its own parameters
    during the step is undone: ``"disk"`` (default) saves them to a temporary
    file and reads back only what was written (no extra memory); ``True``
    copies them in memory; ``False`` keeps nothing, and a write raises
    ``ParameterWriteError``.

    The model is left exactly as found: parameters, buffers, ``.grad``,
    ``requires_grad``, training mode, device, RNG states and the Python state
    the snapshot covers. An exception raised by the baseline is re-raised;
    one raised only by the checkpointed run is a mismatch of kind ``error``.
    """
    if not isinstance(model, torch.nn.Module):
        if not callable(model):
            raise VerifyError(f"model must be an nn.Module or a zero-argument factory, got {type(model).__name__}")
        built = model()
        if not isinstance(built, torch.nn.Module):
            raise VerifyError(f"model factory {_qualname(model)!r} returned {type(built).__name__}, not an nn.Module")
        model = built
    if snapshot_params not in (True, False, "disk"):
        raise VerifyError(f"snapshot_params must be 'disk', True or False, got {snapshot_params!r}")
    if loss_fn is not None and not callable(loss_fn):
        raise VerifyError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise VerifyError(f"dtype must be a torch.dtype, got {dtype!r}")
    _check_tolerance("rtol", rtol)
    _check_tolerance("atol", atol)
    _check_materialised(model)
    run_device = _resolve_device(model, device)
    autocast_dtype = _autocast_dtype(autocast)
    ckpt_kwargs = {"use_reentrant": False, **dict(checkpoint_kwargs or {})}
    wrap = _select_modules(model, checkpoint) if checkpoint is not None else []

    use_cuda = run_device.type == "cuda"
    if use_cuda:
        torch.cuda.init()  # so that the RNG snapshot below covers the CUDA generators
    rng0 = RngState.capture()
    mstate = ModelState.capture(model)
    pystate = PyState(model)
    with _state._lock:
        previous_session = _state.current()
        try:
            mstate.detach_grads()
            needs_move = any(p.device != run_device for _, p in mstate.params) or dtype is not None
            needs_move = needs_move or any(
                b is not None and b.device != run_device for b in mstate.buffer_objects
            )
            mstate.move(run_device if needs_move else None, dtype)
            try:
                mstate.clone_values(params=snapshot_params)
            except SnapshotError as exc:
                raise VerifyError(str(exc)) from None
            bypass.install()
            try:
                engine = _Engine(
                    model, inputs, mstate, pystate, run_device, dtype, loss_fn, wrap, ckpt_kwargs, rtol, atol, seed
                )
                engine.allow_no_checkpoint = allow_no_checkpoint
                engine.autocast = autocast_dtype
                try:
                    return engine.run(localize)
                except ParameterWriteError:
                    raise
                except Exception as exc:
                    # Without a copy, a write that a raising model made is
                    # still the thing the user must hear about first.
                    try:
                        mstate.check_unwritten()
                    except ParameterWriteError as write:
                        raise write from exc
                    raise
            finally:
                _state.set_session(previous_session)
                bypass.uninstall()
        finally:
            pystate.restore()
            mstate.restore()
            rng0.restore()


# ----------------------------------------------------------------------------- engine
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


# ----------------------------------------------------------------------------- comparison
@dataclass
class _Noise:
    abs: float
    exceeds_default: bool


class _Tolerance:
    def __init__(
        self,
        rtol: float | None,
        atol: float | None,
        noise: Mapping[Key, _Noise],
        regions: int = 0,
        autocast: torch.dtype | None = None,
    ) -> None:
        self.rtol = rtol
        self.atol = atol
        self.noise = noise
        self.regions = regions
        self.autocast = autocast

    def for_magnitude(self, dtype: torch.dtype) -> float | None:
        """The round-off allowance relative to a tensor's largest magnitude (default tolerances only).

        Checkpointing (reentrant above all) sums the contributions to a
        gradient in another order. Each element's error then scales with the
        magnitudes summed into it, not with its own value: elements that
        cancel to near zero get large elementwise relative errors although
        the tensor is exact to a few units in the last place of its scale.
        So a tensor also matches when its largest difference is within
        ``16 * eps * sqrt(1 + regions)`` of its largest value, the square
        root growing with the number of separately accumulated regions.
        Explicit ``rtol``/``atol`` are applied elementwise only.
        """
        if self.rtol is not None or self.atol is not None:
            return None
        if not (dtype.is_floating_point or dtype.is_complex):
            return None
        # Under autocast every value went through the low-precision dtype.
        eps = torch.finfo(self.autocast if self.autocast is not None and dtype.is_floating_point else dtype).eps
        return 16 * eps * math.sqrt(1 + self.regions)

    def for_tensor(self, key: Key, dtype: torch.dtype) -> tuple[float, float]:
        drtol, datol = _DEFAULT_TOLERANCES.get(dtype, (0.0, 0.0))
        if self.autocast is not None and dtype.is_floating_point:
            # Under autocast every value went through the low-precision dtype.
            artol, aatol = _DEFAULT_TOLERANCES[self.autocast]
            drtol, datol = max(drtol, artol), max(datol, aatol)
        rtol = self.rtol if self.rtol is not None else drtol
        atol = self.atol if self.atol is not None else datol
        n = self.noise.get(key)
        # Two runs of a nondeterministic kernel differ by a random amount: the
        # checkpointed run is as likely as not to land further from the
        # baseline than a second baseline does. A margin of NOISE_MARGIN x the
        # observed spread keeps such noise quiet; hazards differ by orders more.
        return rtol, atol + (NOISE_MARGIN * n.abs if n is not None else 0.0)

    def ignores(self, key: Key) -> bool:
        n = self.noise.get(key)
        return n is not None and math.isinf(n.abs)


def _noise(run: _Run, ref: _Run, only: set[Key]) -> dict[Key, _Noise]:
    """How far the baseline differs from itself, for the values in ``only``."""
    out: dict[Key, _Noise] = {}
    for key, b in ref.tensors.items():
        if key not in only:
            continue
        a = run.tensors.get(key)
        if a is None or b is None or a.shape != b.shape or a.dtype != b.dtype:
            if (a is None) != (b is None) or (a is not None and b is not None):
                out[key] = _Noise(math.inf, True)
            continue
        diff = _max_abs_diff(a, b)
        if diff > 0:
            drtol, datol = _DEFAULT_TOLERANCES.get(b.dtype, (0.0, 0.0))
            exceeds = not _within(a, b, drtol, datol)
            out[key] = _Noise(diff, exceeds)
    for key, b in ref.other.items():
        if key in only and not _same(run.other.get(key, _ABSENT), b):
            out[key] = _Noise(math.inf, True)
    return out


def _keep_only(run: _Run, keys: set[Key]) -> None:
    """Drop the values of ``run`` that matched (frees their memory before another run)."""
    for key in [k for k in run.tensors if k not in keys]:
        del run.tensors[key]


_ABSENT = object()


def _compare(run: _Run, ref: _Run, tol: _Tolerance, only: set[Key] | None = None) -> list[Mismatch]:
    """Mismatches of ``run`` against ``ref``; ``only`` restricts the values looked at (localisation)."""
    found: list[Mismatch] = []
    if run.error is not None:
        text = str(run.error).strip().splitlines()
        found.append(
            Mismatch("error", type(run.error).__name__, math.inf, math.inf, None, detail=text[0] if text else "")
        )
    keys = list(ref.tensors) + [k for k in run.tensors if k not in ref.tensors]
    if only is not None:
        keys = [k for k in keys if k in only]
    for key in keys:
        kind, name = key
        if tol.ignores(key):
            continue
        if run.error is not None and kind == "output":
            continue
        a, b = run.tensors.get(key), ref.tensors.get(key)
        if kind == "grad":
            if run.error is not None:
                continue
            if a is None and b is not None:
                found.append(Mismatch("missing_grad", name, math.inf, math.inf, None, "no gradient in the checkpointed run"))
                continue
            if a is not None and b is None:
                found.append(Mismatch("unexpected_grad", name, math.inf, math.inf, None, "no gradient in the baseline"))
                continue
        if a is None and b is None:
            continue
        if a is None or b is None:
            found.append(Mismatch(kind, name, math.inf, math.inf, None, "present in only one run"))
            continue
        if a.shape != b.shape or a.dtype != b.dtype:
            found.append(
                Mismatch(kind, name, math.inf, math.inf, None, f"{a.dtype}{list(a.shape)} vs baseline {b.dtype}{list(b.shape)}")
            )
            continue
        rtol, atol = tol.for_tensor(key, b.dtype)
        if not _within(a, b, rtol, atol) and not _within_magnitude(a, b, tol.for_magnitude(b.dtype), atol):
            abs_err, rel_err = _errors(a, b)
            found.append(Mismatch(kind, name, abs_err, rel_err, None))
    if run.error is None:
        for key, b in ref.other.items():
            if only is not None and key not in only:
                continue
            # Python state that ends differently (a call counter at 2 instead
            # of 1) is reported as a note: it changes nothing backward computes.
            if tol.ignores(key) or key[0] == "state":
                continue
            a = run.other.get(key, _ABSENT)
            if not _same(a, b):
                kind, name = key
                detail = "stream advanced differently" if kind == "rng" else f"{a!r} vs baseline {b!r}"
                found.append(Mismatch(kind, name, math.inf, math.inf, None, detail))
    return found


def _state_notes(run: _Run, ref: _Run, keys: set[Key], tol: _Tolerance, limit: int = 12) -> list[str]:
    """One note for all Python attributes that end differently, each named by its module path."""
    diffs = []
    for key, value in run.other.items():
        if key in keys and not tol.ignores(key):
            before = ref.other.get(key, _ABSENT)
            if not _same(value, before):
                diffs.append(f"{key[1]} = {value!r}, baseline {before!r}")
    if not diffs:
        return []
    more = f"; and {len(diffs) - limit} more" if len(diffs) > limit else ""
    return ["Python state differs after the step: " + "; ".join(diffs[:limit]) + more]


def _recompute_drift(first: _Run, run: _Run, tol: _Tolerance) -> list[Mismatch]:
    """Regions whose recompute cannot reproduce their forward: a call-count dependency.

    ``first`` is verify's first run, a forward of the checkpointed model
    (state a call consumes, like a counter in a closure that verify cannot
    rewind, is still fresh there); ``run`` the compared checkpointed step.
    The recompute in backward is one more call of the region, so a region
    whose output fingerprint differs between its first forward and a later
    call (its recompute when that ran to the end, else the next step's
    forward) gives backward other values than the forward used. Each
    region invocation is matched by its order within the run.
    """
    if run.error is not None:
        return []
    found: list[Mismatch] = []
    for (region, n), calls in run.fingerprints.items():
        if not calls:
            continue
        forward, recomputes = calls[0], calls[1:]
        earlier = first.fingerprints.get((region, n), [])[:1] if first.error is None else []
        for label, other in [("its first forward", c) for c in earlier] + [("its forward", c) for c in recomputes]:
            reference, later = (other, forward) if label == "its first forward" else (forward, other)
            # Only the same inputs must give the same outputs (a region after a
            # drifting one sees other inputs; an input written in place is
            # another hazard, compared elsewhere).
            if _fingerprint_difference(reference[0], later[0], tol) is not None:
                continue
            rel = _fingerprint_difference(reference[1], later[1], tol)
            if rel is not None:
                what = "a later call" if label == "its first forward" else "the recompute in backward"
                found.append(
                    Mismatch(
                        "recompute",
                        region,
                        math.inf,
                        rel,
                        region,
                        f"{what} returned other values than {label} (call {n + 1} of this region in the step): "
                        "its output depends on state that calling it changes, so backward recomputes other values",
                    )
                )
                break
    return found


def _fingerprint_difference(a: list[Any], b: list[Any], tol: _Tolerance) -> float | None:
    """Relative difference of two call fingerprints beyond the tolerance, or None when they agree.

    Default: 100x the dtype's ``rtol`` of the absolute sum (at most 5%), for
    round-off. Explicit ``rtol``/``atol`` widen it as far as elementwise
    ``|d| <= atol + rtol * |b|`` allows for the sums.
    """
    if len(a) != len(b):
        return math.inf
    worst = 0.0
    for (sa, dtype_a, n_a), (sb, dtype_b, n_b) in zip(a, b):
        if dtype_a != dtype_b or n_a != n_b:
            return math.inf
        x, y = sa.tolist(), sb.tolist()
        scale = max(x[1], y[1])
        if not (math.isfinite(scale) and all(map(math.isfinite, x + y))):
            if x != y and not all(v != v for v in x + y):
                return math.inf
            continue
        rtol = max(min(100 * _DEFAULT_TOLERANCES.get(dtype_a, (1e-6, 0.0))[0], 0.05), tol.rtol or 0.0)
        allowed = rtol * scale + (tol.atol or 0.0) * n_a + 1e-12
        diff = max(abs(x[0] - y[0]), abs(x[1] - y[1]))
        if diff > allowed:
            worst = max(worst, diff / scale if scale > 0 else math.inf)
    return worst or None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except Exception:
        return a is b


def _as_float(t: torch.Tensor) -> torch.Tensor:
    if t.is_complex():
        return t
    if t.dtype in (torch.float64,):
        return t
    return t.to(torch.float32) if t.is_floating_point() else t.to(torch.float64)


def _within(a: torch.Tensor, b: torch.Tensor, rtol: float, atol: float) -> bool:
    # Checkpointing usually reproduces values bit for bit: the exact test is
    # much cheaper than an elementwise tolerance and settles most tensors.
    if a.numel() == 0 or torch.equal(a, b):
        return True
    if not (a.is_floating_point() or a.is_complex()):
        return False
    af, bf = _as_float(a), _as_float(b)
    d = (af - bf).abs()
    ok = d <= atol + rtol * bf.abs()
    if bool(ok.all()):
        return True
    both_nan = torch.isnan(af) & torch.isnan(bf) if not af.is_complex() else torch.isnan(af.real) & torch.isnan(bf.real)
    return bool((ok | both_nan).all())


def _within_magnitude(a: torch.Tensor, b: torch.Tensor, mrtol: float | None, atol: float) -> bool:
    """``max|a - b| <= atol + mrtol * max|b|`` (see ``_Tolerance.for_magnitude``); NaNs must agree."""
    if mrtol is None:
        return False
    diff = _max_abs_diff(a, b)
    if not math.isfinite(diff):
        return False
    bf = _as_float(b).abs()
    scale = float(bf[torch.isfinite(bf)].max()) if bool(torch.isfinite(bf).any()) else 0.0
    return diff <= atol + mrtol * scale


def _max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.numel() == 0 or torch.equal(a, b):
        return 0.0
    d = (_as_float(a) - _as_float(b)).abs()
    both_nan = torch.isnan(_as_float(a).real if a.is_complex() else _as_float(a)) & torch.isnan(
        _as_float(b).real if b.is_complex() else _as_float(b)
    )
    d = torch.where(both_nan, torch.zeros_like(d), d)
    if torch.isnan(d).any():
        return math.inf
    return float(d.max())


def _errors(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    af, bf = _as_float(a), _as_float(b)
    d = (af - bf).abs()
    d = torch.where(torch.isnan(d), torch.full_like(d, math.inf), d)
    abs_err = float(d.max()) if d.numel() else 0.0
    denom = bf.abs()
    rel = torch.where(denom > 0, d / denom.clamp_min(torch.finfo(d.dtype).tiny if d.is_floating_point() else 1), d * math.inf)
    rel = torch.where(d == 0, torch.zeros_like(rel), rel)
    rel_err = float(rel.max()) if rel.numel() else 0.0
    return abs_err, rel_err


# ----------------------------------------------------------------------------- helpers
def _flatten(obj: Any, prefix: str, depth: int = 0) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor in a model output, with its path: tensors, tuples, dicts, dataclasses, ModelOutputs."""
    if depth > 8:
        return
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, Mapping):
        attr = dataclasses.is_dataclass(obj)
        for k, v in obj.items():
            yield from _flatten(v, f"{prefix}.{k}" if attr and isinstance(k, str) else f"{prefix}[{k!r}]", depth + 1)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _flatten(getattr(obj, f.name, None), f"{prefix}.{f.name}", depth + 1)
    elif isinstance(obj, tuple) and hasattr(obj, "_fields"):
        for fname, v in zip(obj._fields, obj):
            yield from _flatten(v, f"{prefix}.{fname}", depth + 1)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _flatten(v, f"{prefix}[{i}]", depth + 1)


def _fresh_inputs(
    inputs: Any, device: torch.device, dtype: torch.dtype | None
) -> tuple[tuple[Any, ...], dict[str, Any], list[tuple[str, torch.Tensor]]]:
    """Per-run copies of the input tensors, so a model that writes into its input cannot leak between runs."""
    leaves: list[tuple[str, torch.Tensor]] = []

    def copy(obj: Any, path: str, depth: int = 0) -> Any:
        if isinstance(obj, torch.Tensor):
            t = obj.detach().to(device=device, dtype=dtype if (dtype is not None and obj.is_floating_point()) else None)
            if t.data_ptr() == obj.data_ptr():  # .to() was a no-op: still the caller's storage
                t = t.clone()
            if obj.requires_grad:
                t.requires_grad_(True)
                leaves.append((path, t))
            return t
        if depth > 8:
            return obj
        if isinstance(obj, dict):
            return {k: copy(v, f"{path}[{k!r}]", depth + 1) for k, v in obj.items()}
        if isinstance(obj, list):
            return [copy(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(obj)]
        if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
            return tuple(copy(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(obj))
        return obj

    if isinstance(inputs, torch.Tensor):
        return (copy(inputs, "input"),), {}, leaves
    if isinstance(inputs, dict):
        kwargs = {}
        for k, v in inputs.items():
            if not isinstance(k, str):
                raise VerifyError(f"keyword inputs need string keys, got {k!r}")
            kwargs[k] = copy(v, f"input[{k!r}]")
        return (), kwargs, leaves
    if isinstance(inputs, (tuple, list)):
        return tuple(copy(v, f"input[{i}]") for i, v in enumerate(inputs)), {}, leaves
    raise VerifyError(
        f"inputs must be a tensor, a tuple/list of positional arguments or a dict of keyword arguments, "
        f"got {type(inputs).__name__}"
    )


def _checked_unpack(packed: tuple[torch.Tensor, int]) -> torch.Tensor:
    """Autograd's own in-place check, which it skips for tensors packed by saved-tensor hooks.

    Counting saved tensors through ``saved_tensors_hooks`` must not change
    what the model does: a model that modifies a saved tensor in place fails
    without checkpointing (and without verify) with this error, so it must
    fail here too, not pass silently.
    """
    t, version = packed
    if t._version != version:
        raise RuntimeError(
            "one of the variables needed for gradient computation has been modified by an inplace operation: "
            f"[{t.type()} {list(t.shape)}] is at version {t._version}; expected version {version} instead"
        )
    return t


def _storage_ptrs(tensors: Sequence[torch.Tensor]) -> set[int]:
    out = set()
    for t in tensors:
        try:
            out.add(t.untyped_storage().data_ptr())
        except Exception:
            continue
    return out


def _resolve_device(model: torch.nn.Module, device: str | torch.device | None) -> torch.device:
    if device is not None:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise VerifyError(f"device {device!r} is not a torch device: {exc}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise VerifyError(f"device {device!r} requested but CUDA is not available")
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        return dev
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def _select_modules(model: torch.nn.Module, spec: CheckpointSpec) -> list[torch.nn.Module]:
    """Submodules to checkpoint for ``checkpoint=``; descendants of a chosen module are skipped."""
    named = list(model.named_modules())
    if isinstance(spec, str):
        chosen = [(n, m) for n, m in named if n and type(m).__name__ == spec]
        what = f"class name {spec!r}"
    elif isinstance(spec, type):
        chosen = [(n, m) for n, m in named if n and isinstance(m, spec)]
        what = f"type {spec.__name__}"
    elif isinstance(spec, Sequence):
        chosen = []
        for name in spec:
            try:
                chosen.append((name, model.get_submodule(name)))
            except AttributeError:
                raise VerifyError(f"checkpoint=: model has no submodule {name!r}") from None
        what = "names"
    elif callable(spec):
        chosen = [(n, m) for n, m in named if n and spec(m)]
        what = f"predicate {_qualname(spec)!r}"
    else:
        raise VerifyError(
            f"checkpoint= must be a predicate, a module type, a class name or a list of submodule names, got {spec!r}"
        )
    if not chosen:
        raise VerifyError(f"checkpoint=: no submodule of {type(model).__name__} matches {what}")
    out: list[tuple[str, torch.nn.Module]] = []
    for name, mod in chosen:
        if any(name.startswith(p + ".") for p, _ in out):
            continue
        out.append((name, mod))
    return [m for _, m in out]


@contextlib.contextmanager
def _wrapped_modules(modules: list[torch.nn.Module], ckpt_kwargs: dict[str, Any]) -> Iterator[None]:
    """Checkpoint each module's forward for the duration (instance attribute, removed afterwards)."""
    saved: list[tuple[torch.nn.Module, Any]] = []
    try:
        for mod in modules:
            previous = mod.__dict__.get("forward", _ABSENT)
            inner = mod.forward

            def forward(*args: Any, __inner: Any = inner, **kwargs: Any) -> Any:
                return torch.utils.checkpoint.checkpoint(__inner, *args, **ckpt_kwargs, **kwargs)

            mod.__dict__["forward"] = forward
            saved.append((mod, previous))
        yield
    finally:
        for mod, previous in reversed(saved):
            if previous is _ABSENT:
                mod.__dict__.pop("forward", None)
            else:
                mod.__dict__["forward"] = previous


def _rng_state_bytes(use_cuda: bool) -> int:
    """Bytes one ``preserve_rng_state`` stash holds: the CPU generator's state (and the current CUDA one's)."""
    n = torch.get_rng_state().numel()
    if use_cuda:
        n += torch.cuda.get_rng_state().numel()
    return int(n)


def _check_tolerance(name: str, value: float | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise VerifyError(f"{name} must be a non-negative finite number, got {value!r}")


def _check_materialised(model: torch.nn.Module) -> None:
    for kind, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, t in named:
            if t.is_meta:
                raise VerifyError(
                    f"{kind} {name!r} is on the meta device (no values): materialise the model first "
                    "(model.to_empty(device=...) and initialise or load its weights)"
                )


_AUTOCAST = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


def _autocast_dtype(value: str | torch.dtype | None) -> torch.dtype | None:
    if value is None:
        return None
    if isinstance(value, torch.dtype) and value in (torch.bfloat16, torch.float16):
        return value
    if isinstance(value, str) and value in _AUTOCAST:
        return _AUTOCAST[value]
    raise VerifyError(f"autocast must be 'bf16', 'fp16', torch.bfloat16 or torch.float16, got {value!r}")


def _qualname(obj: Any) -> str:
    return getattr(obj, "__qualname__", None) or type(obj).__name__
