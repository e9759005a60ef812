"""files -> parse -> discover -> analyse -> rules -> findings.

:func:`lint` is the whole pipeline for a list of paths. :func:`analyze_file`
is the pure per-file step (one "driver" file: the findings for every
checkpoint site in it, wherever the hazards are located) so a runner can
farm it out to worker processes and cache it; :func:`may_reach_checkpoint`
is the cheap text prefilter that decides whether a file needs it at all.
"""

from __future__ import annotations

import re
import traceback
from dataclasses import dataclass, replace
from typing import Iterable, Sequence

import libcst as cst

from ckptlint.analysis.params import gc_layer_nulled
from ckptlint.analysis.flow import CallEvent, Event, FlowAnalyzer, Root, Visit, WriteEvent
from ckptlint.discovery.patches import mentions_patch
from ckptlint.discovery.sites import CheckedCallable, Discovery
from ckptlint.discovery.wrappers import find_wrappers
from ckptlint.files import iter_python_files
from ckptlint.project import ModuleInfo, Project
from ckptlint.rules import ALL_RULES
from ckptlint.rules._ddp_scope import mentions_ddp_wrap
from ckptlint.rules.base import Hit, RuleContext
from ckptlint.types import Finding, Site

__all__ = [
    "EngineOptions",
    "FileResult",
    "LintResult",
    "Project",
    "analyze_file",
    "dedupe_findings",
    "find_wrappers",
    "lint",
    "may_define_wrappers",
    "may_reach_checkpoint",
    "not_checked",
    "prepare_options",
    "syntax_finding",
]


@dataclass(frozen=True)
class EngineOptions:
    """What the analysis needs beyond the files themselves."""

    # Extra qualified names that behave like torch.utils.checkpoint.checkpoint
    # (deepspeed.checkpointing.checkpoint, a team's wrapper...).
    checkpoint_functions: tuple[str, ...] = ()
    max_helper_depth: int = 3


@dataclass(frozen=True)
class FileResult:
    """Findings produced by checking one driver file."""

    path: str
    findings: tuple[Finding, ...]
    dependencies: tuple[str, ...]
    error: str | None = None


@dataclass(frozen=True)
class LintResult:
    findings: tuple[Finding, ...]
    errors: tuple[tuple[str, str], ...]
    files_checked: int


_TRIGGERS = (
    r"\bcheckpoint(?:_sequential|_seq|_wrapper)?\s*\(",
    r"utils\.checkpoint",
    r"import\s+checkpoint",
    r"checkpoint\s+import",
    r"\bcheckpoint_seq",
    r"_gradient_checkpointing_func",
    r"GradientCheckpointingLayer",
    r"apply_activation_checkpointing",
    r"activation_checkpointing",  # policies: set_activation_checkpointing, FSDPStrategy(activation_checkpointing_policy=)
    r"checkpoint_wrapper",
    # Training scripts that switch checkpointing on (rules with EVENT "module"; issue 9).
    r"(?:gradient|activation)_checkpointing_(?:enable|kwargs)",
    r"find_unused_parameters",
)
_BASE_PREFILTER = re.compile("|".join(_TRIGGERS))
_WINDOW = 200  # longer than any trigger match (whitespace runs aside)
# Triggers that are plain text: where one is in a file the regex matches it too, so a substring test
# (far cheaper than the alternation over a large file) answers first.
_LITERAL_TRIGGERS = (
    "GradientCheckpointingLayer", "_gradient_checkpointing_func", "utils.checkpoint", "activation_checkpointing",
    "checkpoint_wrapper", "gradient_checkpointing_enable", "gradient_checkpointing_kwargs", "find_unused_parameters",
)


def _prefilter(options: EngineOptions) -> re.Pattern[str]:
    extra = sorted({q.rsplit(".", 1)[-1] for q in options.checkpoint_functions if q})
    if not extra:
        return _BASE_PREFILTER
    # A configured name counts where it is called or imported, not where a
    # docstring mentions it (timm's wrapper is simply called ``checkpoint``).
    names = "|".join(re.escape(e) for e in extra)
    return re.compile("|".join([*_TRIGGERS, rf"\b(?:{names})\s*\(", rf"import[^\n]*\b(?:{names})\b"]))


def may_define_wrappers(source: str) -> bool:
    """Cheap text test: can :func:`find_wrappers` find anything in this file? A checkpoint wrapper
    calls a checkpoint name; a home-made checkpoint Function runs its forward under ``no_grad``."""
    return "checkpoint" in source or "no_grad" in source


def reaches_other_files(source: str) -> bool:
    """Cheap text test: can what this file runs change other files' findings — a DDP wrapper
    (CKP404 on the models it imports) or a monkeypatch of torch's checkpoint (what their calls run)?"""
    return mentions_ddp_wrap(source) or mentions_patch(source)


def may_reach_checkpoint(source: str, options: EngineOptions = EngineOptions()) -> bool:
    """Cheap text test: can anything in this file put code under checkpoint?

    Built from the discovery triggers (checkpoint calls and imports, timm's
    ``checkpoint_seq``, ``_gradient_checkpointing_func``,
    ``GradientCheckpointingLayer``, ``checkpoint_wrapper``,
    ``apply_activation_checkpointing``) plus the last component of each
    configured checkpoint function. A file that fails it has no sites; its
    classes are still parsed on demand when another file's sites use them.
    """
    if not options.checkpoint_functions and "heckpoint" not in source and "find_unused_parameters" not in source:
        return False  # every base trigger holds one of the two: a substring test skips the regex (half the time)
    if any(literal in source for literal in _LITERAL_TRIGGERS):
        return True
    pattern = _prefilter(options)
    if options.checkpoint_functions:
        return pattern.search(source) is not None
    # Every other base trigger holds "checkpoint" (find_unused_parameters is a literal, above): the regex runs only
    # around its occurrences (docstrings mention checkpoints everywhere; the alternation over a
    # 250 kB file costs 14 ms). ``pos``/``endpos`` keep ``\b`` reading the real text before a window.
    i = source.find("checkpoint")
    while i != -1:
        # A match starting up to _WINDOW after ``i`` ends within the window; the next one is searched from there.
        if pattern.search(source, max(0, i - _WINDOW), i + 2 * _WINDOW) is not None:
            return True
        i = source.find("checkpoint", i + _WINDOW)
    return False


def prepare_options(project: Project, options: EngineOptions, paths: Iterable[str] | None = None) -> EngineOptions:
    """Options with the tree's own checkpoint wrappers added (see :func:`find_wrappers`)."""
    wrappers = find_wrappers(project, project.files if paths is None else paths, options)
    names = tuple(sorted(set(options.checkpoint_functions) | set(wrappers)))
    return replace(options, checkpoint_functions=names)


# -- rules by event ---------------------------------------------------------------------

def _rules_for(event: str) -> list:
    out = []
    for rule in ALL_RULES:
        events = getattr(rule, "EVENTS", (getattr(rule, "EVENT", ""),))
        if event in events and hasattr(rule, "check"):
            out.append(rule)
    return out


class _FileAnalysis:
    def __init__(self, project: Project, path: str, options: EngineOptions) -> None:
        self.project = project
        self.path = path
        self.options = options
        self.discovery = Discovery(project, options.checkpoint_functions)
        self.findings: list[Finding] = []
        self.call_rules = _rules_for("call")
        self.write_rules = _rules_for("write")
        self.global_rules = _rules_for("global")
        self.site_rules = _rules_for("site")
        self.module_rules = _rules_for("module")
        self._site_labels: dict[int, tuple[str, int]] = {}
        self.current: CheckedCallable | None = None

    def site_label(self, module: ModuleInfo, node: cst.CSTNode, scope: str = "") -> tuple[str, int]:
        """``(path, line)`` of a site, found in the text when possible (no position pass)."""
        key = id(node)
        cached = self._site_labels.get(key)
        if cached is not None:
            return cached
        line = _find_line(module, node, scope)
        if not line:
            pos = module.position(node)
            line = pos.start.line if pos is not None else 0
        label = (module.display, line)
        self._site_labels[key] = label
        return label

    def add(self, code: str, hit: Hit, module: ModuleInfo, stmt: cst.CSTNode | None, checked: CheckedCallable | None,
            chain: tuple[str, ...], site: Site | None) -> None:
        pos = module.position(hit.node)
        if pos is None:
            return
        stmt_lines = None
        if stmt is not None:
            spos = module.position(stmt)
            if spos is not None:
                stmt_lines = (spos.start.line, spos.end.line)
        if stmt_lines is None:
            stmt_lines = (pos.start.line, pos.end.line)
        fix = None
        if hit.fix is not None:
            try:
                fix = hit.fix(module)
            except Exception:  # a fix that cannot be built is dropped, the finding stays
                fix = None
        self.findings.append(
            Finding(
                code=code,
                message=f"{hit.message}",
                path=module.display,
                line=pos.start.line,
                column=pos.start.column,
                end_line=pos.end.line,
                end_column=pos.end.column,
                callable=checked.name if checked is not None else None,
                checkpoint_site=site,
                chain=chain if len(chain) > 1 else (),
                fix=fix,
                statement_lines=stmt_lines,
            )
        )

    def run(self) -> None:
        mod = self.project.module(self.path)
        syntax = syntax_finding(self.project, self.path)
        if syntax is not None:
            self.findings.append(syntax)
            return
        sites, checked = self.discovery.discover(mod)
        first_checked: dict[int, CheckedCallable] = {}
        for item in checked:
            first_checked.setdefault(id(item.site_node), item)
        for site in sites:
            # API-misuse findings name what the call checkpoints, when known.
            target = first_checked.get(id(site.call))
            ctx = RuleContext(target, None, "", site, self.project)
            for rule in self.site_rules:
                for hit in rule.check(site, ctx):
                    label = self.site_label(site.module, site.call, site.ctx.qualname)
                    self.add(rule.CODE, hit, site.module, None, target, (), Site(*label))
        for rule in self.module_rules:  # whole-file rules (training scripts); the hit is its own site
            for hit in rule.check(mod, RuleContext(None, None, "", None, self.project, sites)):
                self.add(rule.CODE, hit, mod, None, None, (), Site(*self.site_label(mod, hit.node)))
        analyzer = FlowAnalyzer(
            self.discovery.resolver, self.options.max_helper_depth, self._on_event, self.discovery.is_checkpoint_call
        )
        for item in checked:
            self.current = item
            if item.ref is None:
                self._member(item)
                continue
            analyzer.nulled = gc_layer_nulled(self.project, item.ref.cls) if item.via == "GradientCheckpointingLayer" else frozenset()
            # What the layer's wrapper sets to None/False is false in its branches (``if use_cache:``).
            analyzer.run(item.ref, item.inputs, memo_extra=(item.preserve_rng_state, analyzer.nulled),
                         consts=frozenset((name, False) for name in analyzer.nulled))
        self.current = None

    def _member(self, item: CheckedCallable) -> None:
        """A library module directly inside a checkpointed container: check the call it gets."""
        inst = item.member
        if inst is None or inst.call is None:
            return
        name = item.member_input
        arg_root = Root("input", name, name) if item.inputs else Root("local", "")
        event = CallEvent(
            inst.call, inst.call, (), None, None, ((None, cst.parse_expression(name), arg_root, ""),), (inst,),
            is_statement=False, in_with=False,
        )
        self._on_event(event, Visit(None, inst.module, (), {}))  # type: ignore[arg-type]

    def _on_event(self, event: Event, visit: Visit) -> None:
        if isinstance(event, CallEvent):
            rules = self.call_rules
            stmt = event.stmt
        elif isinstance(event, WriteEvent):
            rules = self.write_rules
            stmt = event.stmt
        else:
            rules = self.global_rules
            stmt = event.stmt
        item = self.current
        assert item is not None
        ctx = RuleContext(item, visit, lambda: "{}:{}".format(*self.site_label(item.site_module, item.site_node, item.site_scope)), None, self.project)
        for rule in rules:
            for hit in rule.check(event, ctx):
                site = Site(*self.site_label(item.site_module, item.site_node, item.site_scope))
                self.add(rule.CODE, hit, visit.module, stmt, item, visit.chain, site)


def _find_line(module: ModuleInfo, node: cst.CSTNode, scope: str) -> int:
    """Line of ``node`` by searching its source text, narrowed by its enclosing defs."""
    source = module.source
    if isinstance(node, cst.ClassDef):
        m = re.search(r"^[ \t]*class[ \t]+" + re.escape(node.name.value) + r"\b", source, re.M)
        return source.count("\n", 0, m.start()) + 1 if m else 0
    pos = module.position(node)
    return pos.start.line if pos is not None else 0


def dedupe_findings(findings: Iterable[Finding]) -> list[Finding]:
    """One finding per (path, line, column, code), sorted; the shortest chain wins.

    The same hazard is often reached from several checkpoint sites (a helper
    module used by many blocks); users need it once.
    """
    return _dedupe(findings)


def _dedupe(findings: Iterable[Finding]) -> list[Finding]:
    best: dict[tuple[str, int, int, str], Finding] = {}
    for f in findings:
        key = (f.path, f.line, f.column, f.code)
        cur = best.get(key)
        if cur is None or _rank(f) < _rank(cur):
            best[key] = f
    return sorted(best.values(), key=Finding.sort_key)


def _rank(f: Finding) -> tuple[int, str, int, str]:
    site = f.checkpoint_site
    return (len(f.chain), site.path if site else "", site.line if site else 0, f.message)


def analyze_file(project: Project, path: str, options: EngineOptions = EngineOptions()) -> FileResult:
    """Check one driver file: its sites, their callables and helpers anywhere in the tree.

    Pure per file: the result depends only on this file, the files listed in
    ``dependencies`` and ``options``. An internal error becomes ``error``
    (with the traceback) instead of propagating.
    """
    project.start_tracking()
    analysis = _FileAnalysis(project, path, options)
    error: str | None = None
    try:
        analysis.run()
    except RecursionError:
        error = "".join(traceback.format_exc(limit=8))
    except MemoryError:
        # The file's memory budget (max-file-memory): the runner reports it.
        project.stop_tracking()
        raise
    except Exception:
        error = traceback.format_exc()
    accessed = project.stop_tracking()
    for mod in project.loaded_modules():
        if mod.too_deep and (mod.path in accessed or mod.path == project.normalize(path)):
            for line, depth in mod.too_deep:
                analysis.findings.append(
                    not_checked(
                        mod.display,
                        f"the statement at line {line} nests {depth} levels deep (max-nesting is {mod.nesting_limit})",
                        line,
                    )
                )
    project.trim()
    norm = project.normalize(path)
    deps = tuple(sorted(p for p in accessed if p != norm))
    return FileResult(path, tuple(_dedupe(analysis.findings)), deps, error)


def not_checked(path: str, why: str, line: int = 1) -> Finding:
    """The CKP003 finding for a file (or a statement at ``line``) over a per-file budget."""
    how = "raise the budget in [tool.ckptlint] or exclude the file if it is generated data"
    return Finding("CKP003", f"not checked: {why}; checkpointed code there is unchecked; {how}", path, line, 0,
                   line, 1, statement_lines=(line, line))


def syntax_finding(project: Project, path: str) -> Finding | None:
    """CKP001 with Python's own message for a file its compiler rejects, else None."""
    mod = project.module(path)
    if mod.parse_error is None:
        return None
    message, line, col = mod.parse_error
    first_line = message.strip().splitlines()[0] if message.strip() else "invalid syntax"
    return Finding("CKP001", f"syntax error: {first_line}", mod.display, max(line, 1), max(col, 0), max(line, 1),
                   max(col, 0) + 1, statement_lines=(max(line, 1), max(line, 1)))


def _quick_syntax_error(project: Project, path: str) -> Finding | None:
    """CKP001 for a file the prefilter skipped: only Python's parser, never libcst."""
    if project.parses(path):
        return None
    try:
        project.read(path)
    except OSError:
        return None
    return syntax_finding(project, path)


def lint(paths: Sequence[str], options: EngineOptions = EngineOptions(), exclude: Sequence[str] = ()) -> LintResult:
    """Check ``paths`` (files or directories) in this process."""
    files = iter_python_files(paths, exclude)
    project = Project(files)
    options = prepare_options(project, options)
    findings: list[Finding] = []
    errors: list[tuple[str, str]] = []
    for path in files:
        try:
            source = project.read(path)
        except OSError as exc:
            errors.append((path, f"cannot read: {exc}"))
            continue
        if not may_reach_checkpoint(source, options):
            f = _quick_syntax_error(project, path)
            if f is not None:
                findings.append(f)
            continue
        try:
            result = analyze_file(project, path, options)
        except MemoryError:  # no budgets here (the runner has them): one file's error
            project = Project(files)
            errors.append((path, "out of memory while checking this file"))
            continue
        findings.extend(result.findings)
        if result.error is not None:
            errors.append((path, result.error))
    return LintResult(tuple(_dedupe(findings)), tuple(errors), len(files))
