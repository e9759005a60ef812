"""One rank of :func:`runtime_checks.verify_distributed`: build, wrap, run three steps, write the result.

Runs in a process of its own. Every rank runs the same collectives in the
same order whatever it finds (the three steps always run; gradients are
gathered in parameter order), so ranks never wait on one another forever;
anything that goes wrong is written to the rank's result file instead of
raised, and the caller stops the others.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import math
import os
import pickle
import re
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from runtime_checks import _state, bypass
from runtime_checks._dist_job import Job, result_path, shard
from runtime_checks._rank_compare import _difference, _region_of, _same
from runtime_checks.report import MemoryStats, Mismatch, Report, TimingStats
from runtime_checks.snapshot import PyState, RngState, seed_everything
from runtime_checks.verify import _flatten, _fresh_inputs, _select_modules, _wrapped_modules

__all__ = ["rank_main"]

_READY_TWICE = re.compile(r"marked (?:a variable )?(?:as )?ready (?:only once|twice)")
_PARAM_NAME = re.compile(r"with name ([\w.\[\]]+)")


class _Failure(Exception):
    def __init__(self, phase: str, exc: BaseException) -> None:
        super().__init__(phase)
        self.phase = phase
        self.exc = exc


@dataclass
class _Step:
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)
    grads: dict[str, torch.Tensor | None] = field(default_factory=dict)
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)
    rng: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    regions: list[str] = field(default_factory=list)
    error: BaseException | None = None
    seconds: float = 0.0
    saved_bytes: int = 0
    per_region: dict[str, int] = field(default_factory=dict)


def rank_main(rank: int, job: Job) -> None:
    """Entry point of a rank (``torch.multiprocessing.start_processes`` target)."""
    os.environ.setdefault("TORCH_DISTRIBUTED_DEBUG", "INFO")  # DDP's errors then name the parameter
    torch.set_num_threads(job.threads)
    result: dict[str, Any]
    try:
        dist.init_process_group(
            job.backend,
            init_method="file://" + os.path.join(job.workdir, "rendezvous"),
            rank=rank,
            world_size=job.world_size,
            timeout=datetime.timedelta(seconds=job.timeout_s),
        )
    except Exception as exc:  # noqa: BLE001 - reported by the caller
        _write(job, rank, {"error": ("setup", type(exc).__name__, _first_line(exc))})
        return
    try:
        result = {"report": _Rank(rank, job).verify()}
    except _Failure as failure:
        result = {"error": (failure.phase, type(failure.exc).__name__, _first_line(failure.exc))}
    except Exception as exc:  # noqa: BLE001 - anything else is reported, never a hang
        result = {"error": ("verification", type(exc).__name__, _first_line(exc))}
    _write(job, rank, result)
    with contextlib.suppress(Exception):
        dist.destroy_process_group()


def _write(job: Job, rank: int, result: dict[str, Any]) -> None:
    path = result_path(job.workdir, rank)
    with open(path + ".tmp", "wb") as fh:
        pickle.dump(result, fh)
    os.replace(path + ".tmp", path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""


class _Rank:
    def __init__(self, rank: int, job: Job) -> None:
        self.rank = rank
        self.job = job
        if job.backend == "nccl":
            torch.cuda.set_device(rank)
            self.device = torch.device("cuda", rank)
        else:
            self.device = torch.device("cpu")
        try:
            torch.manual_seed(job.seed)  # the same initial weights on every rank
            inner = _build(job.factory)
            inner.to(self.device)
            self.regions_to_wrap = (
                _select_modules(inner, job.checkpoint) if job.checkpoint is not None else []
            )
            # FSDP2 shards the model in place, once; DDP wraps it afresh for each step (see ``wrapped``).
            if job.wrap == "fsdp2":
                _shard(inner, job, self.device)
        except Exception as exc:  # noqa: BLE001
            raise _Failure("building and wrapping the model", exc) from exc
        self.inner = inner
        self._ddp: Any = None
        self.namer = bypass.region_namer(inner)
        self.inputs = shard(job.inputs, rank, job.world_size)
        self.params = list(inner.named_parameters())
        self.buffers = list(inner.named_buffers())
        with torch.no_grad():
            self.saved = [t.detach().clone() for _, t in self.params + self.buffers]
        self.pystate = PyState(inner)

    # -- the fixed sequence -------------------------------------------------------
    def verify(self) -> Report:
        bypass.install()
        try:
            base = self.step("bypass")
            if base.error is not None:
                raise _Failure("baseline", base.error)
            base2 = self.step("bypass", measure=True)
            ckpt = self.step("record")
        finally:
            self._ddp = None
            bypass.uninstall()
            self.restore()
            self.pystate.restore()
        mismatches = self.compare(ckpt, base, base2)
        notes = self.notes(ckpt, base)
        return Report(
            # As for verify: a model in which no checkpoint region ran is not a pass unless allowed.
            equivalent=not mismatches and (bool(ckpt.regions) or self.job.allow_no_checkpoint),
            allow_no_checkpoint=self.job.allow_no_checkpoint,
            mismatches=tuple(sorted(mismatches, key=Mismatch.sort_key)),
            regions=tuple(ckpt.regions),
            memory=MemoryStats(
                saved_bytes_checkpointed=-1, saved_bytes_baseline=base2.saved_bytes, per_region=dict(base2.per_region)
            ),
            timing=TimingStats(checkpointed_s=ckpt.seconds, baseline_s=min(base.seconds, base2.seconds)),
            device=f"{self.device} (rank {self.rank} of {self.job.world_size}, {self.job.wrap})",
            notes=tuple(notes),
        )

    def restore(self) -> None:
        with torch.no_grad():
            for (_, t), saved in zip(self.params + self.buffers, self.saved):
                t.copy_(saved)
        for _, p in self.params:
            p.grad = None

    def step(self, mode: str, *, measure: bool = False) -> _Step:
        self.restore()
        self.pystate.restore()
        seed_everything(self.job.seed * 1009 + self.rank, self.device.type == "cuda")
        session = _state.Session(namer=self.namer, mode=mode)
        model = self.wrapped()
        out = _Step()
        args, kwargs, leaves = _fresh_inputs(self.inputs, self.device, None)
        seen: dict[int, int] = {}
        param_ptrs = {_ptr(t) for t in self.saved} | {_ptr(t) for _, t in self.params + self.buffers}

        def pack(t: torch.Tensor) -> torch.Tensor:
            ptr = _ptr(t)
            if ptr and ptr not in param_ptrs and ptr not in seen:
                seen[ptr] = t.untyped_storage().nbytes()
                if session.stack:
                    out.per_region[session.stack[-1]] = out.per_region.get(session.stack[-1], 0) + seen[ptr]
            return t

        hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t) if measure else contextlib.nullcontext()
        _state.set_session(session)
        start = time.perf_counter()
        outputs: Any = None
        try:
            with torch.enable_grad(), _wrapped_modules(self.regions_to_wrap, self.job.checkpoint_kwargs):
                with hooks:
                    outputs = model(*args, **kwargs)
                loss = self.loss(outputs)
                if loss.requires_grad:
                    loss.backward()
        except Exception as exc:  # noqa: BLE001 - a model error is a result here
            out.error = exc
        finally:
            _state.set_session(None)
        out.seconds = time.perf_counter() - start
        out.regions = list(session.regions)
        out.saved_bytes = sum(seen.values())
        if out.error is not None:
            return out
        out.outputs = {name: _full(t).detach() for name, t in _flatten(outputs, "output")}
        for name, p in self.params:
            out.grads[name] = None if p.grad is None else _full(p.grad).detach().clone()
        for name, leaf in leaves:
            out.grads[name] = None if leaf.grad is None else leaf.grad.detach().clone()
        out.buffers = {name: _full(b).detach().clone() for name, b in self.buffers}
        out.rng = RngState.capture().streams()
        out.state = self.pystate.scalar_values()
        return out

    def loss(self, outputs: Any) -> torch.Tensor:
        if self.job.loss_fn is not None:
            return self.job.loss_fn(outputs).reshape(())
        total: torch.Tensor | None = None
        for name, t in _flatten(outputs, "output"):
            if not t.is_floating_point():
                continue
            local = _local(t)
            g = torch.Generator().manual_seed((self.job.seed * 1_000_003 + zlib.crc32(name.encode())) % 2**63)
            r = torch.randn(local.shape, generator=g, dtype=torch.float32).to(local.device)
            term = (local.float() * r).sum()
            total = term if total is None else total + term
        if total is None:
            raise _Failure("the loss", ValueError("the model returned no floating-point tensor; pass loss_fn="))
        return total

    # -- comparison -----------------------------------------------------------------
    def compare(self, ckpt: _Step, base: _Step, base2: _Step) -> list[Mismatch]:
        regions = ckpt.regions or base.regions
        if ckpt.error is not None:
            return [self.explain_error(ckpt.error, regions)]
        found: list[Mismatch] = []
        for kind, a_map, b_map, n_map in (
            ("output", ckpt.outputs, base.outputs, base2.outputs),
            ("grad", ckpt.grads, base.grads, base2.grads),
            ("buffer", ckpt.buffers, base.buffers, base2.buffers),
        ):
            for name, b in b_map.items():
                a = a_map.get(name)
                shown = self.display(name)
                region = _region_of(shown, regions)
                if (a is None) != (b is None):
                    kind2 = "missing_grad" if a is None else "unexpected_grad"
                    found.append(Mismatch(kind2, shown, math.inf, math.inf, region))
                    continue
                if a is None or b is None:
                    continue
                err = _difference(a, b, n_map.get(name), self.job.rtol, self.job.atol)
                if err is not None:
                    found.append(Mismatch(kind, shown, err[0], err[1], region))
        for name, value in base.rng.items():
            if not _same(ckpt.rng.get(name), value):
                found.append(Mismatch("rng", f"torch.{name}" if name in ("cpu", "cuda") else name, math.inf, math.inf, None))
        return found

    def display(self, name: str) -> str:
        return name[len("module."):] if self.job.wrap == "ddp" and name.startswith("module.") else name

    def wrapped(self) -> torch.nn.Module:
        """The model as the step runs it: under DDP a new wrapper, as a new training run would build.

        One wrapper for every step would make DDP see a checkpointed and an
        uncheckpointed graph in turn: ``static_graph=True`` rejects that
        ("training graph has changed"), and ``find_unused_parameters``
        bookkeeping would carry over. The previous wrapper is dropped first so
        that its gradient hooks are gone.
        """
        if self.job.wrap != "ddp":
            return self.inner
        from torch.nn.parallel import DistributedDataParallel

        self._ddp = None
        gc.collect()
        ids = [self.device.index] if self.device.type == "cuda" else None
        self._ddp = DistributedDataParallel(self.inner, device_ids=ids, **self.job.wrap_kwargs)
        return self._ddp

    def explain_error(self, exc: BaseException, regions: list[str]) -> Mismatch:
        text = _first_line(exc)
        if _READY_TWICE.search(str(exc)):
            param = _PARAM_NAME.search(str(exc))
            pname = self.display(param.group(1)) if param else "a parameter used in a checkpointed region"
            detail = (
                f"DDP + reentrant checkpoint: {pname!r} was marked ready twice in one backward. Reentrant "
                "checkpoint reruns the region's forward inside backward, so DDP's gradient hook fires again for "
                "parameters that are shared/tied between regions or when find_unused_parameters=True. Fix: "
                "use_reentrant=False (transformers: gradient_checkpointing_kwargs={'use_reentrant': False}), or "
                "DistributedDataParallel(..., static_graph=True)"
            )
            return Mismatch("error", type(exc).__name__, math.inf, math.inf, _region_of(pname, regions), detail)
        return Mismatch("error", type(exc).__name__, math.inf, math.inf, regions[0] if len(regions) == 1 else None, text)

    def notes(self, ckpt: _Step, base: _Step) -> list[str]:
        out = []
        if ckpt.error is None:
            for name, value in ckpt.state.items():
                if name in base.state and not _same(value, base.state[name]):
                    out.append(f"Python state differs after the step: {name} = {value!r}, baseline {base.state[name]!r}")
        return out


def _build(factory: Any) -> torch.nn.Module:
    if isinstance(factory, str):
        from runtime_checks.cli import load_factory

        factory = load_factory(factory)
    model = factory()
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"the factory returned {type(model).__name__}, not an nn.Module")
    return model


def _shard(model: torch.nn.Module, job: Job, device: torch.device) -> None:
    """FSDP2 as users apply it: ``fully_shard`` on every block, then on the root."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (job.world_size,))
    for block in _blocks(model):
        fully_shard(block, mesh=mesh, **job.wrap_kwargs)
    fully_shard(model, mesh=mesh, **job.wrap_kwargs)


def _blocks(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """What users shard one by one: the elements of every ModuleList (transformer layers, stages)."""
    for mod in model.modules():
        if isinstance(mod, torch.nn.ModuleList):
            yield from mod


def _ptr(t: torch.Tensor) -> int:
    try:
        return _local(t).untyped_storage().data_ptr()
    except Exception:  # noqa: BLE001 - tensor subclasses without storage
        return 0


def _local(t: torch.Tensor) -> torch.Tensor:
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) else t


def _full(t: torch.Tensor) -> torch.Tensor:
    """A sharded (DTensor) value gathered in full: a collective, called in the same order on every rank."""
    full = getattr(t, "full_tensor", None)
    return full() if callable(full) else t
