"""The flake8 entry point (``CKP`` prefix)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from ckptlint.flake8_plugin import Plugin

SRC = '''\
import torch
from torch.utils.checkpoint import checkpoint


def block(x):
    y = x * 2
    x.add_(1)
    return x + y


def run(x):
    return checkpoint(block, x, use_reentrant=False)
'''


def _run_plugin(path: Path) -> list[tuple[int, int, str]]:
    src = path.read_text()
    plugin = Plugin(ast.parse(src), str(path), src.splitlines(keepends=True))
    return [(line, col, msg) for line, col, msg, _ in plugin.run()]


def test_plugin_reports_with_code_prefix_and_0_based_column(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "m.py"
    path.write_text(SRC)
    results = _run_plugin(path)
    assert [(line, col, msg.split()[0]) for line, col, msg in results] == [(7, 4, "CKP101")]


def test_plugin_skips_files_without_checkpointing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "m.py"
    path.write_text("def f(x):\n    x.add_(1)\n")
    assert _run_plugin(path) == []


def test_through_flake8(tmp_path: Path) -> None:
    pytest.importorskip("flake8", reason="flake8 is not installed")
    try:
        from importlib.metadata import entry_points

        registered = [ep for ep in entry_points(group="flake8.extension") if ep.name == "CKP"]
    except Exception:  # pragma: no cover
        registered = []
    if not registered:
        pytest.skip("ckptlint is not installed with its flake8 entry point (pip install -e .)")
    path = tmp_path / "m.py"
    path.write_text(SRC)
    proc = subprocess.run(
        [sys.executable, "-m", "flake8", "--select", "CKP", "m.py"], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.startswith("m.py:7:5: CKP101 "), proc.stdout
