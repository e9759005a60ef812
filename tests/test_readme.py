"""The documentation stays true: README.md is generated from docs/index.md, names
the test command CI runs, and every code block in docs/ is run or excused.

Markers (an HTML comment on the line before a fence; docs/development.md):
``<!-- docs-test: run -->``, ``<!-- docs-test: output -->``,
``<!-- docs-test: skip: REASON -->``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

_FENCE = re.compile(r"^```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
_MARK = re.compile(r"<!--\s*docs-test:\s*(?P<kind>run|output|skip)(?::\s*(?P<reason>.*?))?\s*-->")

# Languages that are not programs: shown, never run.
NOT_PROGRAMS = {
    "": "a diagram or program output",
    "text": "program output shown to the reader",
    "json": "an output sample",
    "yaml": "configuration read by GitHub Actions or pre-commit (the hooks are run by tests/cli_features/test_precommit.py)",
    "ini": "pytest configuration",
    "lua": "Neovim configuration",
}
# (page, language) whose blocks another test runs.
DELEGATED = {
    ("runtime.md", "python"): "tests/runtime/test_docs.py runs every python block of this page",
    ("pytest.md", "python"): "pytest test-module fragments needing the plugin's fixtures and markers; the complete "
    "example is examples/test_example_equivalence.py (shown verbatim, checked by tests/plugin)",
    ("planner.md", "python"): "tests/runtime/test_planner_docs.py runs every python block of this page, in order",
    ("distributed.md", "python"): "tests/distributed/test_docs.py runs the script and the pytest example "
    "(each spawns rank processes)",
}


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    lang: str
    body: str
    mark: str | None
    reason: str | None

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def _blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    out = []
    for m in _FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = _MARK.search(before)
        out.append(
            Block(
                page=path.name,
                line=text.count("\n", 0, m.start()) + 1,
                lang=m.group("lang"),
                body=m.group("body"),
                mark=mark.group("kind") if mark else None,
                reason=mark.group("reason") if mark else None,
            )
        )
    return out


# README.md is docs/index.md (test_readme_is_built_from_docs), so its blocks are index.md's.
BLOCKS = [b for page in sorted(DOCS.glob("*.md")) for b in _blocks(page)]


def _policy(block: Block) -> tuple[str, str]:
    """("run" | "output" | "validate" | "excused" | "unmarked", why)."""
    if block.mark == "skip":
        return "excused", block.reason or ""
    if block.mark in ("run", "output"):
        return block.mark, ""
    if (block.page, block.lang) in DELEGATED:
        return "excused", DELEGATED[(block.page, block.lang)]
    if block.lang == "python":
        return "run", ""
    if block.lang == "toml":
        if "[tool.ckptlint" in block.body:
            return "validate", ""
        return "excused", "configuration of another tool"
    if block.lang in NOT_PROGRAMS:
        return "excused", NOT_PROGRAMS[block.lang]
    return "unmarked", f"a {block.lang or 'plain'} block needs a docs-test marker"


def test_readme_is_built_from_docs() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "build_readme.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_readme_is_short() -> None:
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 250


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## The two commands", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert commands[0].strip() == "ckptlint check examples/"
    test_command = commands[-1].strip()
    assert test_command == "python -m pytest -q"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert any(line.strip() == test_command for line in ci.splitlines())


def test_readme_install_is_what_ci_installs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    install = readme.split("## Install (from a clone)", 1)[1].split("\n## ", 1)[0]
    assert "not on PyPI" in install
    commands = re.findall(r"```bash\n(.*?)```", install, flags=re.S)[0]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    extras = re.search(r"pip install -e '(\.\[[^]]+\])'", commands)
    assert extras is not None and f'"{extras.group(1)}"' in ci
    assert "pip install torch==2.13.0" in commands and "torch==2.13.0" in ci
    assert "pip install transformers diffusers" in commands and "install -q transformers diffusers" in ci


def test_readme_examples_path_exists() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "ckptlint check examples/" in readme
    assert (ROOT / "examples" / "hazards").is_dir()
    assert (ROOT / "examples" / "clean_model.py").is_file()


def test_every_docs_block_is_run_or_excused() -> None:
    problems = [f"{b.id}: {_policy(b)[1]}" for b in BLOCKS if _policy(b)[0] == "unmarked"]
    problems += [f"{b.id}: skip marker without a reason" for b in BLOCKS if _policy(b) == ("excused", "")]
    for prev, block in zip(BLOCKS, BLOCKS[1:]):
        if block.mark == "output" and not (prev.page == block.page and _policy(prev)[0] == "run"):
            problems.append(f"{block.id}: an output block must follow a run block")
    if BLOCKS and BLOCKS[0].mark == "output":
        problems.append(f"{BLOCKS[0].id}: an output block must follow a run block")
    assert not problems, "\n".join(problems)


@pytest.fixture
def scratch(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A folder with examples/ (and src/, a copy of the hazards) and ``ckptlint`` on PATH."""
    work = tmp_path / "work"
    shutil.copytree(ROOT / "examples", work / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "examples" / "hazards", work / "src")
    shutil.copy(ROOT / "examples" / "hazards" / "inplace_on_input.py", work / "src" / "model.py")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shim = bindir / "ckptlint"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m ckptlint "$@"\n')
    shim.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "CKPTLINT_CACHE_DIR": str(tmp_path / "cache"),
        "NO_COLOR": "1",
    }
    return work, env


def _output_after(block: Block) -> Block | None:
    i = BLOCKS.index(block)
    nxt = BLOCKS[i + 1] if i + 1 < len(BLOCKS) else None
    return nxt if nxt is not None and nxt.page == block.page and nxt.mark == "output" else None


def _missing_imports(source: str) -> list[str]:
    names = re.findall(r"^(?:from|import)\s+([A-Za-z_]\w*)", source, flags=re.M)
    return sorted({n for n in names if importlib.util.find_spec(n) is None})


RUNNABLE = [b for b in BLOCKS if _policy(b)[0] in ("run", "validate")]


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.id for b in RUNNABLE])
def test_docs_block_runs(block: Block, scratch: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    work, env = scratch
    kind = _policy(block)[0]
    if kind == "validate":
        from ckptlint.config import read_config_file

        path = work / "pyproject.toml"
        path.write_text(block.body, encoding="utf-8")
        read_config_file(path)  # raises ConfigError on any bad key or value
        return
    if block.lang == "python":
        missing = _missing_imports(block.body)
        if missing:
            pytest.skip(f"{block.id} imports {', '.join(missing)}, not installed here")
        monkeypatch.chdir(work)
        exec(compile(block.body, block.id, "exec"), {"__name__": "docs_example"})
        return
    assert block.lang == "bash", f"{block.id}: only bash and python blocks can be run"
    # A status of 1 means findings (documented); 2 or more is an error.
    script = "trap 'status=$?; if [ $status -ge 2 ]; then exit $status; fi' ERR\n" + block.body
    proc = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1), f"{block.id} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    expected = _output_after(block)
    if expected is not None:
        shown = proc.stdout.splitlines()
        for line in expected.body.splitlines():
            if line.endswith("..."):
                assert any(s.startswith(line[:-3]) for s in shown), f"{expected.id}: {line!r} not in\n{proc.stdout}"
            else:
                assert line in shown, f"{expected.id}: {line!r} not in\n{proc.stdout}"
