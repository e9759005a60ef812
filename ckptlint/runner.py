"""One ``ckptlint check`` run: files -> prefilter -> analysis (pooled, cached)
-> selection -> suppressions -> sorted findings, plus the ``--fix`` loop.

The engine (:mod:`ckptlint.engine`) analyses one *driver* file at a time and
is pure per file; this module decides which files need it, runs them in a
process pool, reuses cached results, and applies everything that depends on
configuration rather than on code: rule selection, ``per-file-ignores`` and
suppression comments. Keeping those out of the engine means changing
``ignore`` never invalidates the cache.

That filtering is in :mod:`ckptlint.runner_filter`, and :class:`RunSettings`,
:class:`RunResult` and :func:`default_jobs` in :mod:`ckptlint.runner_types`;
every name is importable from here, as before.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from ckptlint.cache import Facts, ResultCache, content_hash
from ckptlint.config import Config
from ckptlint.files import Listing, display_path, list_python_files
from ckptlint.fixing import FixReport, fix_passes
from ckptlint.runner_filter import _decode, _filter
from ckptlint.runner_filter import _source_text  # noqa: F401 - importable from here, as before
# Re-exported: callers import the settings and results from ckptlint.runner.
from ckptlint.runner_types import RunResult, RunSettings, default_jobs
from ckptlint.types import Finding
from ckptlint.workers import Outcome as _Outcome
from ckptlint.workers import Task as _Task
from ckptlint.workers import execute as _execute

__all__ = ["RunSettings", "RunResult", "FixReport", "run", "default_jobs"]


# --------------------------------------------------------------------- one pass


def _engine() -> Any:
    from ckptlint import engine

    return engine


@dataclass
class _Pass:
    findings: list[Finding]
    errors: list[tuple[str, str]]
    files: list[str]
    analysed: int
    hits: int
    texts: dict[str, str]
    warnings: list[str] = field(default_factory=list)


def _schedule(tasks: list[_Task]) -> list[_Task]:
    """Order analyses for a pool: folders with the most source first.

    Files of one folder (a model's modeling/modular/config files) share their
    imports, so they stay together for the workers' parse caches; the biggest
    folders go first so that no long analysis is left for the end while the
    other workers idle.
    """
    weight: dict[str, int] = {}
    size: dict[str, int] = {}
    for _kind, path in tasks:
        try:
            size[path] = os.path.getsize(path)
        except OSError:
            size[path] = 0
        folder = os.path.dirname(path)
        weight[folder] = weight.get(folder, 0) + size[path]
    return sorted(tasks, key=lambda t: (-weight[os.path.dirname(t[1])], os.path.dirname(t[1]), -size[t[1]], t[1]))


def _over_size(path: str, limit: int) -> str | None:
    """Why ``path`` is too big to read (``max-file-bytes``), or None."""
    if not limit:
        return None
    try:
        size = os.stat(path).st_size
    except OSError:
        return None  # reported as unreadable when it is read
    if size <= limit:
        return None
    return f"the file has {size:,} bytes, more than max-file-bytes ({limit:,})"


def _options_key(functions: Sequence[str], depth: int, nesting: int, scripts: Sequence[tuple[str, str]] = ()) -> str:
    import hashlib
    import json

    data = {"checkpoint_functions": list(functions), "max_helper_depth": depth, "max_nesting": nesting,
            "scripts": [list(s) for s in scripts]}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _lint_pass(
    files: list[str],
    settings: RunSettings,
    overlay: dict[str, str],
    timings: dict[str, float],
) -> _Pass:
    config = settings.config
    cache = ResultCache(
        config.project_root,
        {"checkpoint_functions": list(config.checkpoint_functions), "max_helper_depth": config.max_helper_depth},
        enabled=settings.use_cache,
        # In-memory fixed sources (--diff) are not what is on disk: use the
        # cache, but store nothing learnt from them.
        read_only=bool(overlay),
        directory=config.cache_directory(),
    )
    for key, text in overlay.items():
        cache.override(key, content_hash(text.encode("utf-8", "surrogatepass")))
    # The engine (and libcst behind it) is imported only when some file needs
    # real work: a fully cached run never pays for it.
    t0 = time.perf_counter()
    texts: dict[str, str] = {}
    digests: dict[str, str] = {}
    unreadable: dict[str, str] = {}

    # Texts are not kept: on a big tree they would double the main process's
    # memory, and every worker forked from it would inherit that.
    early: dict[str, bool] = {}  # prefilter verdicts under the configured options

    def text_of(path: str) -> str | None:
        if path in texts:
            return texts[path]
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            unreadable[path] = f"cannot read: {exc}"
            return None
        digests[path] = cache.record(path, data)
        return _decode(data)

    # 1. Content hashes and per-file facts (checkpoint wrappers defined there).
    base_functions = tuple(config.checkpoint_functions)
    wrappers: set[str] = set()
    facts: dict[str, Facts] = {}
    budgets = config.budgets
    oversized: list[Finding] = []
    for path in files:
        if path in overlay:
            texts[path] = overlay[path]
            digests[path] = cache.current_hash(path)
        else:
            too_big = _over_size(path, budgets.max_file_bytes)
            if too_big is not None:
                oversized.append(_engine().not_checked(display_path(path), too_big))
                continue
            digest = cache.known_hash(path)
            if digest is None and text_of(path) is None:
                continue
            if digest is not None:
                digests[path] = digest
        known = cache.facts(path, digests[path]) if digests.get(path) else None
        if known is None:
            text = text_of(path)
            if text is None:
                continue
            engine = _engine()
            base = engine.EngineOptions(checkpoint_functions=base_functions, max_helper_depth=config.max_helper_depth)
            found: tuple[str, ...] = ()
            if engine.may_define_wrappers(text):  # most files: no Project to build
                found = tuple(engine.find_wrappers(engine.Project([path], sources={os.path.normpath(path): text}), [path], base))
            known = Facts(found, None, engine.reaches_other_files(text))
            if digests.get(path):
                cache.remember_facts(path, digests[path], known)
            # While the text is at hand: the verdict holds unless the tree
            # turns out to define checkpoint wrappers (then it is redone).
            early[path] = bool(engine.may_reach_checkpoint(text, base))
        facts[path] = known
        wrappers.update(known.wrappers)
    functions = tuple(sorted(set(base_functions) | wrappers))
    # A training script that wraps a model in DDP or patches checkpoint changes the findings of the
    # files it imports: results hold only for its current content (editing it re-checks the tree).
    scripts = sorted((display_path(p), digests.get(p, "")) for p, f in facts.items() if f.reaches_others)
    cache.set_analysis_key(_options_key(functions, config.max_helper_depth, budgets.max_nesting, scripts))
    lazy: dict[str, Any] = {}

    def options() -> Any:
        if "options" not in lazy:
            lazy["options"] = _engine().EngineOptions(
                checkpoint_functions=functions, max_helper_depth=config.max_helper_depth
            )
        return lazy["options"]

    # 2. Prefilter: which files can put code under checkpoint (the drivers).
    drivers: list[str] = []
    others: list[str] = []
    for path in files:
        if path not in facts:
            continue
        digest = digests.get(path, "")
        verdict = cache.prefilter_verdict(digest) if digest else None
        if verdict is None:
            if functions == base_functions and path in early:
                verdict = early[path]
            else:
                text = text_of(path)
                if text is None:
                    continue
                verdict = bool(_engine().may_reach_checkpoint(text, options()))
            if digest:
                cache.remember_prefilter(digest, verdict)
        (drivers if verdict else others).append(path)
    timings["prefilter"] = timings.get("prefilter", 0.0) + time.perf_counter() - t0

    # 3. Analysis of drivers and the syntax check of the rest, cached or pooled.
    t0 = time.perf_counter()
    results: list[_Outcome] = []
    tasks: list[_Task] = []
    for path in drivers:
        hit = cache.lookup(path, digests[path]) if digests.get(path) else None
        if hit is not None:
            results.append(("analyse", path, hit.findings, hit.dependencies, hit.error))
        else:
            tasks.append(("analyse", path))
    hits = len(drivers) - len(tasks)
    tasks = _schedule(tasks)
    for path in others:
        if facts[path].syntax is not None:
            results.append(("syntax", path, facts[path].syntax, (), None))
        else:
            tasks.append(("syntax", path))
    # The texts served the prefilter; workers read what they analyse. Dropping
    # them before the pool forks keeps every process small on big trees.
    texts.clear()
    jobs = settings.jobs if settings.jobs is not None else default_jobs()
    need_options = any(kind == "analyse" for kind, _ in tasks)
    fresh = _execute(files, tasks, overlay, options() if need_options else None, jobs, settings.progress, budgets)
    for kind, path, found, deps, error in fresh:
        digest = digests.get(path)
        if not digest or any(f.code == "CKP003" for f in found):
            # A budget verdict depends on the machine and the budgets, not only
            # on the file: the next run tries again.
            continue
        if kind == "analyse":
            cache.store(path, digest, found, deps, error)
        elif error is None:
            cache.remember_facts(path, digest, Facts(facts[path].wrappers, found, facts[path].reaches_others))
    results.extend(fresh)
    cache.save()
    timings["analysis"] = timings.get("analysis", 0.0) + time.perf_counter() - t0

    findings: set[Finding] = set(oversized)
    errors: list[tuple[str, str]] = sorted(unreadable.items())
    for _kind, path, found, _deps, error in results:
        findings.update(found)
        if error:
            errors.append((path, error))
    merged = sorted(findings, key=Finding.sort_key)
    if len({(f.path, f.line, f.column, f.code) for f in merged}) != len(merged):
        # One hazard reached from several checkpoint sites: the engine's rule
        # (shortest chain wins) picks the one to show. Only then is the engine
        # imported, so a cached run without duplicates never loads libcst.
        merged = list(_engine().dedupe_findings(merged))
    return _Pass(
        findings=merged,
        errors=sorted(errors),
        files=files,
        analysed=sum(1 for kind, _ in tasks if kind == "analyse"),
        hits=hits,
        texts=texts,
        warnings=[cache.warning] if cache.warning else [],
    )


# --------------------------------------------------------------------- the run


def list_files(paths: Sequence[str], config: Config) -> Listing:
    """The Python files of a run: recursion and default skips, then ``exclude``."""
    listing = list_python_files(list(paths) or ["."])
    matcher = config.exclude_matcher()
    if matcher:
        listing.files = [f for f in listing.files if not matcher.matches(f)]
    return listing


def _with_sources(files: list[str], settings: RunSettings) -> tuple[list[str], dict[str, str]]:
    """``files`` plus the in-memory ones, and the overlay under every spelling."""
    matcher = settings.config.exclude_matcher()
    listed = {os.path.normpath(f) for f in files}
    extra = [
        os.path.normpath(p)
        for p in settings.sources
        if os.path.normpath(p) not in listed and not (matcher and matcher.matches(p))
    ]
    # Every spelling under which the engine and the filters may look a path up.
    base = {
        key: text
        for path, text in settings.sources.items()
        for key in (path, os.path.normpath(path), os.path.abspath(path), display_path(path))
    }
    return sorted([*files, *extra], key=display_path), base


def run(paths: Sequence[str], settings: RunSettings) -> RunResult:
    """Lint ``paths`` (and fix, if asked) under ``settings``."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    # With in-memory sources, paths may name files that exist only there.
    on_disk = [p for p in paths if os.path.exists(p)] if settings.sources else list(paths)
    listing = list_files(on_disk, settings.config) if on_disk or not settings.sources else Listing([], [], [])
    files, base = _with_sources(listing.files, settings)
    timings["listing"] = time.perf_counter() - t0
    fixing = settings.fix or settings.diff or settings.unsafe_fixes
    if fixing and base:
        raise ValueError("in-memory sources are linted, never fixed, by run(): see cli_support.fix_in_memory")
    report: FixReport | None = None
    passes: list[_Pass] = []

    def lint_with(overlay: dict[str, str]) -> tuple[list[Finding], list[Finding]]:
        passes.append(_lint_pass(files, settings, overlay, timings))
        return _filter(passes[-1].findings, files, settings, passes[-1].texts, overlay)

    if fixing:
        findings, hidden, report = fix_passes(
            list(paths) or ["."],
            files,
            unsafe=settings.unsafe_fixes,
            write=settings.fix or (settings.unsafe_fixes and not settings.diff),
            diff=settings.diff,
            lint=lint_with,
        )
    else:
        findings, hidden = lint_with(base)
    lint = passes[-1]
    analysed = max(p.analysed for p in passes)
    timings["total"] = time.perf_counter() - t0
    return RunResult(
        findings=findings,
        suppressed=hidden,
        errors=sorted(lint.errors + listing.problems),
        files_checked=len(files),
        files_analysed=analysed,
        cache_hits=lint.hits,
        fixes=report,
        timings=timings,
        warnings=list(listing.warnings) + lint.warnings,
    )
