"""The checkpoint-equivalence verdict under torch.distributed (DDP, FSDP2), one process per rank.

``verify_distributed(factory, inputs, world_size=2, wrap="ddp")`` spawns
``world_size`` processes with ``torch.multiprocessing.start_processes`` (the
machinery torchrun's elastic agent uses), joined through a file rendezvous in
a private temporary directory. Each rank builds the model from the factory
(same seed, so the same weights), wraps it as users do
(``DistributedDataParallel``, or ``fully_shard`` on every block and the root),
takes its shard of the batch, and runs the same fixed sequence of steps:

1. baseline: every checkpoint bypassed (a model that fails here fails
   without checkpointing: that is raised, never blamed on checkpointing);
2. baseline again: the noise floor of each value, and the bytes saved for
   backward (counted only here, so no run that is compared is changed);
3. checkpointed: the model as it is.

Every rank runs the same collectives in the same order whatever it finds, so
no rank can wait for another that took a different branch. Gradients are
compared after reduction (FSDP2: the full, unsharded gradients), buffers and
outputs per rank. Each rank writes its result to a file; the caller's process
assembles one :class:`DistributedReport`. A rank that dies or raises makes the
others stop at once; nothing outlives the call (processes, files), also on
Ctrl-C or when ``timeout`` runs out.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from runtime_checks._dist_job import Job, batch_size, result_path
from runtime_checks._ranks import rank_main
from runtime_checks.report import Mismatch, Report, _bytes, _num

__all__ = ["DistributedError", "DistributedReport", "verify_distributed"]

Wrap = Literal["ddp", "fsdp2"]
_WRAPS = ("ddp", "fsdp2")
# A rank that failed leaves the others inside a collective that can never
# complete; they are stopped after this grace rather than after ``timeout``.
_FAILED_RANK_GRACE_S = 5.0
# An error a rank raised because a peer went away: a consequence, never the cause.
_LOST_PEER = re.compile(r"Connection (?:reset|closed)|Broken pipe|[Tt]imed out|gloo/transport|NCCL (?:error|communicator)")


class DistributedError(RuntimeError):
    """The distributed run could not produce a verdict: a rank died, timed out, or the model fails without checkpointing."""


@dataclass(frozen=True)
class DistributedReport:
    """Outcome of :func:`verify_distributed`: one :class:`Report` per rank."""

    equivalent: bool
    world_size: int
    wrap: str
    backend: str
    ranks: tuple[Report, ...]
    seconds: float

    def __str__(self) -> str:
        unchecked = bool(self.ranks) and not any(r.regions for r in self.ranks) and not self.ranks[0].allow_no_checkpoint
        verdict = "NOT CHECKPOINTED (no checkpoint region ran)" if unchecked else (
            "EQUIVALENT" if self.equivalent else "NOT EQUIVALENT")
        lines = [
            f"ckptlint verify: {verdict} under {self.wrap.upper()} ({self.world_size} ranks, {self.backend}); "
            f"{self.seconds:.1f} s"
        ]
        regions = self.ranks[0].regions if self.ranks else ()
        lines.append("checkpoint regions: " + (", ".join(regions) if regions else "none (nothing was checkpointed)"))
        # The same mismatch on several ranks (reduced gradients are equal
        # everywhere) is one row naming those ranks.
        where: dict[tuple[str, str, str], list[int]] = {}
        first: dict[tuple[str, str, str], Mismatch] = {}
        for rank, report in enumerate(self.ranks):
            for m in report.mismatches:
                key = (m.kind, m.name, m.region or "")
                where.setdefault(key, []).append(rank)
                first.setdefault(key, m)
        if first:
            rows = [("kind", "name", "max abs err", "region", "ranks")]
            for key, m in sorted(first.items(), key=lambda kv: kv[1].sort_key()):
                ranks = where[key]
                shown = "all" if len(ranks) == self.world_size > 1 else ",".join(map(str, ranks))
                rows.append((m.kind, m.name, _num(m.max_abs_err), m.region or "?", shown))
            widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
            for i, row in enumerate(rows[:41]):
                lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
                if i == 0:
                    lines.append("  " + "  ".join("-" * w for w in widths))
            if len(rows) > 41:
                lines.append(f"  ... {len(rows) - 41} more")
            details = {m.detail: None for m in first.values() if m.detail}
            for detail in list(details)[:4]:
                lines.append(f"  detail: {detail}")
        notes = {n: None for report in self.ranks for n in report.notes}
        for note in list(notes)[:8]:
            lines.append(f"note: {note}")
        for rank, report in enumerate(self.ranks):
            t, mem = report.timing, report.memory
            lines.append(
                f"rank {rank}: step checkpointed {t.checkpointed_s * 1e3:.1f} ms, baseline {t.baseline_s * 1e3:.1f} ms; "
                f"saved for backward without checkpointing {_bytes(mem.saved_bytes_baseline)}"
            )
        return "\n".join(lines)


def verify_distributed(
    model_factory: Callable[[], torch.nn.Module] | str,
    inputs: Any,
    *,
    world_size: int = 2,
    wrap: Wrap = "ddp",
    backend: str | None = None,
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
    checkpoint: Sequence[str] | str | type | None = None,
    checkpoint_kwargs: Mapping[str, Any] | None = None,
    wrap_kwargs: Mapping[str, Any] | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    seed: int = 0,
    timeout: float = 300.0,
    allow_no_checkpoint: bool = False,
    start_method: Literal["spawn", "forkserver", "fork"] = "spawn",
) -> DistributedReport:
    """Verify ``model_factory()``'s checkpointing under ``wrap`` on ``world_size`` processes.

    ``model_factory``: a zero-argument callable that pickles by reference (a
    module-level function or class; lambdas and closures do not cross the
    process boundary under ``spawn``), or a ``"path/to/file.py:FACTORY"`` /
    ``"module:FACTORY"`` string. It builds the model exactly as a training
    script does, checkpointing switched on (``gradient_checkpointing_enable``,
    ``apply_activation_checkpointing`` ...); ``checkpoint=`` (module names, a
    class or class name) checkpoints submodules of a model that does not.
    ``inputs``: the *global* batch (a tensor, a tuple of positional arguments
    or a dict of keyword arguments); every tensor whose first dimension is the
    batch size is split across ranks along it.
    ``wrap``: ``"ddp"`` (``DistributedDataParallel(model, **wrap_kwargs)``) or
    ``"fsdp2"`` (``fully_shard`` on each block of every ``ModuleList``, then
    on the root, with ``wrap_kwargs``). ``backend``: ``"gloo"`` on CPU
    (default without CUDA), ``"nccl"`` on CUDA (one GPU per rank).
    ``allow_no_checkpoint=True`` accepts a model in which no checkpoint region
    ran (by default that is not a pass, as for ``verify``).
    ``timeout`` bounds the whole call and every collective: a rank that
    hangs or dies ends the call with :class:`DistributedError`, every process
    stopped and every temporary file removed.
    """
    from runtime_checks.verify import VerifyError

    if not isinstance(world_size, int) or isinstance(world_size, bool) or world_size < 1:
        raise VerifyError(f"world_size must be a positive integer, got {world_size!r}")
    if wrap not in _WRAPS:
        raise VerifyError(f"wrap must be one of {', '.join(_WRAPS)}, got {wrap!r}")
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise VerifyError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if not isinstance(model_factory, str) and not callable(model_factory):
        raise VerifyError(f"model_factory must be a zero-argument callable or 'file.py:FACTORY', got {model_factory!r}")
    if isinstance(model_factory, torch.nn.Module):
        raise VerifyError("model_factory must build the model in each rank: pass its class or factory, not an instance")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() and torch.cuda.device_count() >= world_size else "gloo"
    if backend == "nccl" and torch.cuda.device_count() < world_size:
        raise VerifyError(f"backend 'nccl' needs {world_size} GPUs, found {torch.cuda.device_count()}")
    batch_size(inputs, world_size)  # validate the split before any process starts
    workdir = tempfile.mkdtemp(prefix="ckptlint-dist-")
    job = Job(
        factory=model_factory,
        inputs=inputs,
        world_size=world_size,
        wrap=wrap,
        backend=backend,
        workdir=workdir,
        timeout_s=float(timeout),
        seed=seed,
        loss_fn=loss_fn,
        checkpoint=checkpoint,
        checkpoint_kwargs={"use_reentrant": False, **dict(checkpoint_kwargs or {})},
        wrap_kwargs=dict(wrap_kwargs or {}),
        rtol=rtol,
        atol=atol,
        threads=max(1, (os.cpu_count() or 1) // world_size),
        allow_no_checkpoint=allow_no_checkpoint,
    )
    start = time.perf_counter()
    try:
        try:
            pickle.dumps((model_factory, loss_fn, checkpoint))
        except Exception as exc:  # noqa: BLE001 - any pickling failure means the same thing
            raise VerifyError(
                f"model_factory, loss_fn and checkpoint must pickle to reach the ranks ({exc}); "
                "use a module-level function or a 'file.py:FACTORY' string"
            ) from None
        exits = _supervise(rank_main, job, start_method)
        results = [_read_result(workdir, rank) for rank in range(world_size)]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    reports = _assemble(results, exits, timeout)
    return DistributedReport(
        equivalent=all(r.equivalent for r in reports),
        world_size=world_size,
        wrap=wrap,
        backend=backend,
        ranks=tuple(reports),
        seconds=time.perf_counter() - start,
    )


# ----------------------------------------------------------------------------- the caller's side
@dataclass
class _Exit:
    code: int | None = None  # None: still running when stopped
    stopped: str = ""  # why the caller stopped it, if it did


def _supervise(target: Callable[..., None], job: Job, start_method: str) -> list[_Exit]:
    """Start the ranks, wait for all of them, stop the rest as soon as one fails or time runs out."""
    import torch.multiprocessing as mp

    ctx = mp.start_processes(target, args=(job,), nprocs=job.world_size, join=False, start_method=start_method)
    procs = ctx.processes
    exits = [_Exit() for _ in procs]
    deadline = time.monotonic() + job.timeout_s
    failed_at: float | None = None
    try:
        while True:
            running = [i for i, p in enumerate(procs) if p.is_alive()]
            for i, p in enumerate(procs):
                if i not in running and exits[i].code is None:
                    exits[i].code = p.exitcode
                    failed = p.exitcode != 0 or _result_is_error(job.workdir, i)
                    if failed and failed_at is None:
                        failed_at = time.monotonic()
            if not running:
                break
            now = time.monotonic()
            if now >= deadline:
                _stop(procs, exits, f"still running after the {job.timeout_s:g} s timeout: stopped")
                break
            if failed_at is not None and now - failed_at >= _FAILED_RANK_GRACE_S:
                _stop(procs, exits, "stopped: another rank failed")
                break
            procs[running[0]].join(0.2)
    except BaseException:
        _stop(procs, exits, "stopped: interrupted")
        raise
    return exits


def _stop(procs: Sequence[Any], exits: list[_Exit], why: str) -> None:
    for i, p in enumerate(procs):
        if p.is_alive():
            exits[i].stopped = why
            p.terminate()
    for p in procs:
        p.join(3.0)
        if p.is_alive():
            p.kill()
            p.join()


def _result_is_error(workdir: str, rank: int) -> bool:
    result = _read_result(workdir, rank)
    return result is None or "error" in result


def _read_result(workdir: str, rank: int) -> dict[str, Any] | None:
    try:
        with open(result_path(workdir, rank), "rb") as fh:
            return pickle.load(fh)  # noqa: S301 - written by our own child process, in our private directory
    except (OSError, EOFError, pickle.UnpicklingError):
        return None


def _assemble(results: list[dict[str, Any] | None], exits: list[_Exit], timeout: float) -> list[Report]:
    """Turn per-rank results into reports, or raise one clear DistributedError (model errors first)."""
    problems: dict[str, list[int]] = {}  # message -> ranks
    causes: list[str] = []  # messages that explain the failure; the rest are its consequences
    for rank, (result, ex) in enumerate(zip(results, exits)):
        if result is not None and "error" in result:
            phase, kind, text = result["error"]
            if _LOST_PEER.search(text):
                message = f"lost contact with the other ranks ({kind}: {text[:160]})"
            elif phase == "baseline":
                message = f"the model raised {kind} without checkpointing too (not a checkpointing problem): {text}"
                causes.append(message)
            else:
                message = f"{phase} failed: {kind}: {text}"
                causes.append(message)
        elif result is None and ex.stopped:
            message = ex.stopped
        elif result is None and ex.code is not None and ex.code < 0:
            message = f"died ({_signal_name(-ex.code)}) before reporting"
            causes.insert(0, message)
        elif result is None:
            message = (
                f"exited with code {ex.code} before reporting (called from a script? each rank imports it "
                "again: put the call under `if __name__ == '__main__':`)"
            )
            causes.insert(0, message)
        else:
            continue
        problems.setdefault(message, []).append(rank)
    if problems:
        order = sorted(problems, key=lambda m: (causes.index(m) if m in causes else len(causes), problems[m]))
        raise DistributedError("; ".join(f"{_ranks_label(problems[m])}: {m}" for m in order))
    return [r["report"] for r in results if r is not None]


def _ranks_label(ranks: list[int]) -> str:
    return f"rank {ranks[0]}" if len(ranks) == 1 else "ranks " + ", ".join(map(str, ranks))


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"
