"""A tiny stand-in for ckptlint.engine with the same API, for runner mechanics.

It flags ``x.add_(...)`` (CKP101, unsafe fix), ``inplace=True`` (CKP105, safe
fix) and, through a ``# dep: NAME.py`` comment, every line containing ``BAD``
in that other file (CKP201, located in the other file), so that tests of
caching, suppression, selection and the fix loop do not depend on the real
rules' precision. End-to-end tests with the real engine live in test_cli.py.
"""

from __future__ import annotations

import os
import re

# The contract's value types are the real ones, so the fake cannot drift from them.
from ckptlint.engine import EngineOptions, FileResult
from ckptlint.files import display_path
from ckptlint.types import Edit, Finding, Fix, Site

CALLS: list[str] = []


class Project:
    def __init__(self, files, sources=None, max_nesting=100):  # type: ignore[no-untyped-def]
        self.files = list(files)
        self.sources = dict(sources or {})

    def read(self, path: str) -> str:
        p = os.path.normpath(path)
        if p in self.sources:
            return self.sources[p]
        with open(p, encoding="utf-8") as fh:
            return fh.read()


def reaches_other_files(source: str) -> bool:
    return "DDP(" in source


def may_reach_checkpoint(source: str, options: EngineOptions) -> bool:
    return "checkpoint" in source or any(f.rsplit(".", 1)[-1] in source for f in options.checkpoint_functions)


def analyze_file(project: Project, path: str, options: EngineOptions) -> FileResult:
    CALLS.append(path)
    src = project.read(path)
    if "CRASH" in src:
        raise RuntimeError("engine crashed on purpose")
    shown = display_path(path)
    site = Site(shown, 1)
    out: list[Finding] = []
    deps: list[str] = []
    for i, line in enumerate(src.splitlines(), 1):
        m = re.search(r"\b(\w+)\.add_\(", line)
        if m:
            name = m.group(1)
            start = m.start()
            fix = Fix(
                "rebind",
                "unsafe",
                (Edit(i, start, i, start, f"{name} = "), Edit(i, m.end() - 2, i, m.end() - 1, "")),
            )
            out.append(Finding("CKP101", f"in-place add_() on input {name!r}", shown, i, start, i, m.end(),
                               callable="f", checkpoint_site=site, fix=fix, statement_lines=(i, i)))
        m = re.search(r"inplace=True", line)
        if m:
            fix = Fix("inplace=False", "safe", (Edit(i, m.start() + 8, i, m.end(), "False"),))
            out.append(Finding("CKP105", "inplace=True on input", shown, i, m.start(), i, m.end(),
                               callable="f", checkpoint_site=site, fix=fix, statement_lines=(i, i)))
        m = re.search(r"# dep: (\S+)", line)
        if m:
            dep = os.path.join(os.path.dirname(path), m.group(1))
            deps.append(dep)
            with open(dep, encoding="utf-8") as fh:
                for j, dline in enumerate(fh.read().splitlines(), 1):
                    if "BAD" in dline:
                        out.append(Finding("CKP201", "state write", display_path(dep), j, 0, j, len(dline),
                                           callable="Dep.forward", checkpoint_site=site, statement_lines=(j, j)))
    return FileResult(path, tuple(out), tuple(deps))


def may_define_wrappers(source: str) -> bool:
    return "# wrapper:" in source


def find_wrappers(project: Project, paths, options: EngineOptions) -> tuple[str, ...]:  # type: ignore[no-untyped-def]
    out = []
    for path in paths:
        for m in re.finditer(r"# wrapper: (\S+)", project.read(path)):
            out.append(m.group(1))
    return tuple(sorted(out))


def _quick_syntax_error(project: Project, path: str) -> Finding | None:
    CALLS.append("syntax:" + path)
    try:
        compile(project.read(path), path, "exec")
    except SyntaxError as exc:
        return Finding("CKP001", f"syntax error: {exc.msg}", display_path(path), exc.lineno or 1, 0, exc.lineno or 1, 1)
    return None
