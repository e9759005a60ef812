"""Issue 11's "done when": one tree with every hostile case, checked in bounded time.

Each case gets its own message (a finding, or one stderr line), the rest of
the tree is checked, and the exit status is 2 (a path could not be read) as
docs/ci.md documents.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from .hostile import build_hostile_tree


@pytest.fixture
def hostile(tmp_path: Path):
    root = tmp_path / "tree"
    expects = build_hostile_tree(root)
    yield root, expects
    (root / "secret").chmod(0o755)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_every_hostile_case_is_reported_and_the_run_ends(hostile, ckptlint_cli, jobs: str) -> None:
    root, expects = hostile
    target_before = sorted(p.name for p in (root / "cache_target").iterdir())
    start = time.monotonic()
    run = ckptlint_cli(["check", "-j", jobs, "--format", "json", "."], root, timeout=120)
    elapsed = time.monotonic() - start
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    got = {(f["path"], f["code"]) for f in run.findings()}
    for expect in expects:
        if expect.code is not None:
            assert (expect.path, expect.code) in got, (expect, sorted(got))
        else:
            assert any(expect.stderr in line and (expect.path in line or expect.path.startswith("."))
                       for line in run.stderr.splitlines()), (expect, run.stderr)
    # Each file once (no copies through pkg/self, pkg/up, legacy_models, alias.py).
    paths = [f["path"] for f in run.findings() if f["code"] == "CKP101"]
    assert len(paths) == len(set(paths))
    assert not [p for p in paths if "self/" in p or "up/" in p or p.startswith("legacy_models") or p == "alias.py"]
    assert sorted(p.name for p in (root / "cache_target").iterdir()) == target_before
    assert elapsed < 100


def test_hostile_tree_text_output_is_inert(hostile, ckptlint_cli) -> None:
    root, _ = hostile
    run = ckptlint_cli(["check", "--no-cache", "."], root, timeout=120)
    assert run.returncode == 2
    assert "\x1b" not in run.stdout and "\x07" not in run.stdout
    assert "odd/esc\\x1b[2J.py" in run.stdout and "odd/caf\\xe9.py" in run.stdout
    assert "odd/new\\nline.py" in run.stdout
    assert os.path.isdir(root / "cache_target")
