"""Running the per-file tasks of a pass: here or in worker processes, under budgets.

A task is ``(kind, path)``: ``"analyse"`` a driver file, or ``"syntax"``
(CKP001 only) for a file the prefilter skipped. Whatever one file does, the
run goes on and ends:

* a task over ``file-timeout`` seconds is stopped by ``SIGALRM`` (and, in a
  worker stuck in native code where no Python handler can run, by a CPU-time
  timer whose default action ends the worker);
* a worker's address space may grow by at most ``max-file-memory`` MiB past
  its size at start-up (in a run without workers: past its size when the
  task starts, for that task), so a huge file raises ``MemoryError`` instead
  of taking the machine;
* a worker that dies (segfault, OOM killer, the CPU timer) breaks the pool:
  the files that had started and not finished are re-run one per process, the
  one that kills its process again is reported, and the rest go on in a
  fresh pool.

Each of these ends in a CKP003 finding for the file (see
:func:`ckptlint.engine.not_checked`), never in a lost task or a hang.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import threading
import traceback
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable

from ckptlint.config import Budgets
from ckptlint.sourcetext import freeze_after_parse
from ckptlint.types import Finding

__all__ = ["Outcome", "Task", "execute", "POOL_THRESHOLD"]

Task = tuple[str, str]  # (kind, path); kind "analyse" (a driver) or "syntax" (CKP001 only)
Outcome = tuple[str, str, tuple[Finding, ...], tuple[str, ...], str | None]

# Below this many files to analyse, a worker pool costs more than it saves.
POOL_THRESHOLD = 4
# A worker whose resident memory passes this drops its parsed-module cache
# (and starts afresh) so that peak memory stays bounded on huge trees.
WORKER_RSS_LIMIT = 350 * 1024 * 1024

_WORKER: dict[str, Any] = {}


class _Timeout(BaseException):
    """Raised by the alarm inside a task (a BaseException: no ``except Exception`` swallows it)."""


def _engine() -> Any:
    from ckptlint import engine

    return engine


def _statm(field: int) -> int:
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[field]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


# Young-generation threshold for the processes ckptlint owns (the CLI and its workers; a library
# caller's process keeps its own): parsing and inference allocate in bursts of nodes and memo
# entries that live as long as the run, and CPython's default (700) collects so often that the
# collections cost a fifth of a cold run (timm 13.3 s -> 11.5 s, transformers 70 -> 63 s in one
# process, the same findings; peak RSS 282 -> 314 MB on transformers). Larger values (50,000) ran
# transformers slower again (147 s) and grew memory further.
GC_THRESHOLD = (10_000, 10, 10)


def tune_gc() -> None:
    """Collect less often in a process ckptlint owns (see :data:`GC_THRESHOLD`)."""
    gc.set_threshold(*GC_THRESHOLD)


def _fresh_project() -> None:
    engine = _engine()
    files, sources = _WORKER["args"]
    _WORKER["project"] = engine.Project(files, sources=dict(sources), max_nesting=_WORKER["budgets"].max_nesting)
    gc.collect()


def _init_worker(
    files: list[str], sources: dict[str, str], options: Any, budgets: Budgets, started: Any, in_worker: bool
) -> None:
    if in_worker:
        # Ctrl-C reaches the whole process group: the parent alone reports it
        # and ends the pool, so no worker prints a traceback — not even one
        # still building its project here (a slow machine, a large tree).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        tune_gc()
        freeze_after_parse()
    _WORKER.update(args=(files, sources), options=options, budgets=budgets, started=started, in_worker=in_worker)
    _fresh_project()
    if in_worker:
        _cap_memory(budgets.max_file_memory)  # for the worker's life: it only runs tasks


def _cap_memory(mib: int) -> Callable[[], None]:
    """Let the address space grow by at most ``mib`` MiB from now; returns the undo."""
    if not mib:
        return lambda: None
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = _statm(0) + mib * 1024 * 1024
        if hard != resource.RLIM_INFINITY and limit >= hard:
            return lambda: None
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):
        return lambda: None  # no address-space limits here (not Linux): the other budgets still hold

    def undo() -> None:
        try:
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        except (ValueError, OSError):
            pass

    return undo


def _on_alarm(_signum: int, _frame: Any) -> None:
    raise _Timeout()


def _arm(timeout: float) -> Callable[[], None]:
    """Start the timers for one task; returns the function that stops them."""
    if not timeout or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        return lambda: None
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    hard = _WORKER.get("in_worker", False)
    if hard:
        # Native code (libcst's parser) never returns to the interpreter to
        # run the SIGALRM handler; SIGVTALRM's default action ends the worker.
        signal.signal(signal.SIGVTALRM, signal.SIG_DFL)
        signal.setitimer(signal.ITIMER_VIRTUAL, 2 * timeout + 5)

    def disarm() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        if hard:
            signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGALRM, previous)

    return disarm


def _run_task(task: Task) -> Outcome:
    kind, path = task
    engine = _engine()
    budgets: Budgets = _WORKER["budgets"]
    started = _WORKER.get("started")
    if started is not None:
        started.put(task)
    project = _WORKER["project"]
    why: str | None = None
    # In this process (a small run), the cap holds for the task only, and only
    # on the main thread: a host running lints in a thread (an editor server)
    # must not have its other threads capped.
    alone = threading.current_thread() is threading.main_thread()
    uncap = _cap_memory(budgets.max_file_memory) if alone and not _WORKER.get("in_worker") else (lambda: None)
    disarm = _arm(budgets.file_timeout)
    try:
        try:
            if kind == "syntax":
                found = engine._quick_syntax_error(project, path)
                out: Outcome = (kind, path, (found,) if found is not None else (), (), None)
            else:
                result = engine.analyze_file(project, path, _WORKER["options"])
                out = (kind, path, tuple(result.findings), tuple(result.dependencies), result.error)
        finally:
            disarm()
            uncap()
    except _Timeout:
        why = f"checking it took longer than file-timeout ({budgets.file_timeout:g} s)"
    except MemoryError:
        why = f"checking it needed more than max-file-memory ({budgets.max_file_memory} MiB)"
    except Exception:  # one file's crash must not stop the others
        out = (kind, path, (), (), traceback.format_exc())
    if why is not None:
        project.stop_tracking()
        _fresh_project()
        return (kind, path, (engine.not_checked(_display(path), why),), (), None)
    if _rss_bytes() > WORKER_RSS_LIMIT:
        # Parsed modules are the bulk of a worker's memory; dropping them
        # costs re-parses, never correctness.
        _fresh_project()
    return out


def _display(path: str) -> str:
    from ckptlint.files import display_path

    return display_path(path)


def _rss_bytes() -> int:
    return _statm(1)


def _died(task: Task) -> Outcome:
    kind, path = task
    why = "the worker process checking it died (a crash in native code, or killed by the OS, e.g. out of memory)"
    return (kind, path, (_engine().not_checked(_display(path), why),), (), None)


def execute(
    files: list[str],
    tasks: list[Task],
    sources: dict[str, str],
    options: Any,
    jobs: int,
    progress: Callable[[int, int], None] | None,
    budgets: Budgets,
) -> list[Outcome]:
    """Run ``tasks`` in this process or in a pool of ``jobs`` workers."""
    if not tasks:
        return []
    # Syntax checks are cheap; only real analyses justify a pool.
    heavy = sum(1 for kind, _ in tasks if kind == "analyse")
    if jobs <= 1 or (heavy < POOL_THRESHOLD and len(tasks) < 50 * POOL_THRESHOLD):
        out: list[Outcome] = []
        _init_worker(files, sources, options, budgets, None, False)
        try:
            for i, task in enumerate(tasks, 1):
                out.append(_run_task(task))
                if progress:
                    progress(i, len(tasks))
        finally:
            _WORKER.clear()
        return out
    return _Pool(files, sources, options, budgets, jobs, progress, len(tasks)).run(tasks)


class _Pool:
    """A process pool that survives dying workers (see the module docstring)."""

    def __init__(
        self,
        files: list[str],
        sources: dict[str, str],
        options: Any,
        budgets: Budgets,
        jobs: int,
        progress: Callable[[int, int], None] | None,
        total: int,
    ) -> None:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        self.ctx = multiprocessing.get_context(method)
        self.initargs = (files, sources, options, budgets)
        self.jobs = jobs
        self.progress = progress
        self.total = total
        self.out: list[Outcome] = []

    def _done(self, outcome: Outcome) -> None:
        self.out.append(outcome)
        if self.progress:
            self.progress(len(self.out), self.total)

    def run(self, tasks: list[Task]) -> list[Outcome]:
        pending = list(tasks)
        while pending:
            suspects, pending = self._round(pending, self.jobs)
            # Each file that was running when a worker died gets a process of
            # its own: the one that kills it again is the culprit.
            for task in suspects:
                again, _ = self._round([task], 1)
                if again:
                    self._done(_died(task))
        return self.out

    def _round(self, tasks: list[Task], width: int) -> tuple[list[Task], list[Task]]:
        """Run ``tasks``; on a broken pool return (started-unfinished, not started)."""
        started = self.ctx.SimpleQueue()
        begun: set[Task] = set()
        finished: set[Task] = set()
        executor = ProcessPoolExecutor(
            max_workers=width, mp_context=self.ctx, initializer=_init_worker,
            initargs=(*self.initargs, started, True),
        )
        broken = False
        try:
            # One task at a time per worker: an analysis takes from
            # milliseconds to seconds; the schedule keeps a folder together.
            futures: dict[Future[Outcome], Task] = {executor.submit(_run_task, t): t for t in tasks}
            # ``as_completed`` waits on each future once; a ``wait(FIRST_COMPLETED)`` loop re-arms every
            # pending future per completion, O(n^2): on transformers' 2,951 files that was 6-8 s of
            # this process's CPU, taken from the workers on a 2-core machine.
            for future in as_completed(futures):
                while not started.empty():
                    begun.add(tuple(started.get()))  # type: ignore[arg-type]
                try:
                    outcome = future.result()
                except BrokenProcessPool:
                    broken = True
                    break
                finished.add(futures[future])
                self._done(outcome)
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
        if not broken:
            return [], []
        while not started.empty():
            begun.add(tuple(started.get()))  # type: ignore[arg-type]
        for future, task in futures.items():
            if task not in finished and future.done() and not future.cancelled() and future.exception() is None:
                finished.add(task)
                self._done(future.result())
        left = [t for t in tasks if t not in finished]
        suspects = [t for t in left if t in begun] or left[:1]
        return suspects, [t for t in left if t not in suspects]
