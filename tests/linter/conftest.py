"""Helpers for linter tests: lint a snippet written to a temporary tree."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from ckptlint.engine import EngineOptions, lint
from ckptlint.types import Finding

EXPECT = re.compile(r"#\s*expect:\s*([A-Z0-9, ]+)")


def expectations(source: str) -> list[tuple[int, str]]:
    out = []
    for i, line in enumerate(source.splitlines(), 1):
        m = EXPECT.search(line)
        if m:
            out.extend((i, c.strip()) for c in m.group(1).split(",") if c.strip())
    return sorted(out)


@pytest.fixture
def lint_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write ``files`` ({relative path: source}) under tmp_path and lint the tree."""
    monkeypatch.chdir(tmp_path)

    def run(files: dict[str, str] | str, options: EngineOptions = EngineOptions()) -> list[Finding]:
        if isinstance(files, str):
            files = {"mod.py": files}
        for rel, src in files.items():
            p = tmp_path / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(textwrap.dedent(src))
        result = lint(["."], options)
        assert not result.errors, result.errors
        return list(result.findings)

    return run
