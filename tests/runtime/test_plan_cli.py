"""``ckptlint profile`` / ``ckptlint plan``: table, JSON, charts, HTML, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ckptlint.cli import main

pytest.importorskip("scipy")
FACTORY = str(Path(__file__).parent / "data" / "plan_factory.py")


def test_profile_prints_one_line_per_region(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", f"{FACTORY}:build", "--repeats", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["region", "saved", "kept"]
    assert [line.split()[0] for line in out[1:7]] == [f"blocks.{i}" for i in range(6)]
    assert "saved-tensor accounting" in out[-1]


def test_plan_json_carries_the_api_fields(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", f"{FACTORY}:build", "--budget", "45%", "--format", "json", "--repeats", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["method"] == "milp" and data["regions"] and data["meets_budget"]
    assert data["predicted_bytes"] <= data["budget_bytes"]
    assert {h["method"] for h in data["heuristics"]} == {"all-blocks", "every-2nd", "sqrt-n-segments"}


def test_plan_verify_exits_1_when_the_plan_breaks_equivalence(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["plan", f"{FACTORY}:batchnorm", "--budget", "99%", "--allow-unsafe", "--verify", "--repeats", "1",
               "--candidates", "blocks.1"])
    out = capsys.readouterr().out
    assert rc == 1 and "NOT EQUIVALENT" in out and "blocks.1.norm.running_mean" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["plan", f"{FACTORY}:build", "--budget", "2 parsecs"], "'2 parsecs' is not a size"),
        (["plan", f"{FACTORY}:build", "--budget", "0"], "cannot be met"),
        (["profile", f"{FACTORY}:model_only"], "no inputs"),
        (["profile", f"{FACTORY}:nope"], "has no attribute 'nope'"),
        (["profile", f"{FACTORY}:build", "--candidates", "blocks.9"], "no submodule 'blocks.9'"),
    ],
)
def test_usage_errors_are_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*argv, "--repeats", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_charts_and_html_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    svg, png, page = tmp_path / "p.svg", tmp_path / "p.png", tmp_path / "p.html"
    assert main(["plan", f"{FACTORY}:build", "--budget", "45%", "--repeats", "1", "--chart", str(svg), "--html", str(page)]) == 0
    assert main(["profile", f"{FACTORY}:build", "--repeats", "1", "--chart", str(png)]) == 0
    capsys.readouterr()
    assert "<svg" in svg.read_text()[:500]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = page.read_text()
    assert "<svg" in text and "blocks.5" in text and "sqrt-n-segments" in text
