"""docs/planner.md stays true: its python examples run, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("scipy")

DOC = Path(__file__).resolve().parents[2] / "docs" / "planner.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_python_examples_run_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    assert len(BLOCKS) >= 3
    namespace: dict[str, object] = {"__name__": "planner_doc"}
    for i, block in enumerate(BLOCKS):
        exec(compile(block, f"{DOC}:block{i}", "exec"), namespace)
    out = capsys.readouterr().out
    assert "{'every_n_layers': 2}" in out
    assert "['blocks.0', 'blocks.2', 'blocks.4']" in out


def test_benchmark_table_is_filled_in() -> None:
    text = DOC.read_text()
    assert "BENCH_TABLE" not in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "milp" in line]
    assert {row.split("|")[1].strip() for row in rows} >= {"gpt2", "bert", "vit", "resnet", "unet"}
