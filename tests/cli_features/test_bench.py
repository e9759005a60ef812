"""benchmarks/bench_lint.py helpers (the full benchmark downloads wheels; not run here)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_lint", REPO / "benchmarks" / "bench_lint.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_lint"] = module
    spec.loader.exec_module(module)
    return module


def test_count_and_measure(tmp_path: Path) -> None:
    bench = _bench()
    (tmp_path / "a.py").write_text("x = 1\ny = 2\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.py").write_text("z = 3\n")
    assert bench.count(tmp_path) == (2, 3)
    wall, max_rss, _tree, note, cpu = bench.measure([sys.executable, "-c", "x = bytearray(50 * 2**20)"], tmp_path, 60)
    assert wall is not None and wall > 0 and note == "" and cpu is not None and cpu > 0
    assert max_rss is not None and max_rss >= 50
    wall, _, _, note, _cpu = bench.measure([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path, 0.5)
    assert wall is None and note == "timeout"


def test_target_verdicts() -> None:
    bench = _bench()
    M = bench.Measurement
    rows = [
        M("timm", 304, 141115, "ckptlint", "cold (--no-cache)", 8.0, 300.0, 450.0),
        M("timm", 304, 141115, "ckptlint", "warm (cached)", 0.4, 40.0, 40.0),
        M("timm", 304, 141115, "ruff ALL", "--no-cache, full", 2.0, 80.0, 80.0),
        M("diffusers", 1105, 616098, "ckptlint", "cold (--no-cache)", 9.0, 120.0, 200.0),
        M("diffusers", 1105, 616098, "ckptlint", "warm (cached)", 0.2, 30.0, 30.0),
        M("diffusers", 1105, 616098, "ruff ALL", "--no-cache, full", 2.0, 80.0, 80.0),
    ]
    text = bench.targets(rows)
    assert "timm: cold 4.0x ruff ALL (target <= 4x: met)" in text
    assert "warm 0.20x (target < 0.5x: met)" in text
    assert "300 MB per process / 450 MB all processes (target < 300 MB per process: NOT met)" in text
    assert "diffusers: cold 4.5x ruff ALL (target <= 4x: NOT met)" in text
    assert "120 MB per process / 200 MB all processes (target < 300 MB per process: met)" in text
