"""`ckptlint check` end to end with the real engine: formats, config, suppressions, fixes."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from ckptlint.cli import main

from .test_formats import validate_sarif

REPO = Path(__file__).resolve().parents[2]

MODEL = '''\
import torch
from torch import nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x, mask):
        x.add_(1)
        mask.masked_fill_(mask > 0, 0.0)
        h = F.relu(x, inplace=True)
        return self.fc(h) + mask


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()

    def forward(self, x, mask):
        return checkpoint(self.block, x, mask, use_reentrant=False)
'''


@pytest.fixture
def proj(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "model.py").write_text(MODEL)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "p"\n')
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["check", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> list[tuple[str, int, str]]:
    code, out, err = _run(capsys, "--format", "json", *argv)
    assert code in (0, 1), err
    return [(d["path"], d["line"], d["code"]) for d in json.loads(out)]


def test_baseline_findings_and_exit(proj: Path, capsys: pytest.CaptureFixture[str]) -> None:
    found = _json(capsys, ".")
    assert found == [("pkg/model.py", 13, "CKP101"), ("pkg/model.py", 14, "CKP101"), ("pkg/model.py", 15, "CKP105")]
    assert _run(capsys, ".")[0] == 1
    assert _run(capsys, ".", "--exit-zero")[0] == 0


def test_sarif_of_examples_validates(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    code, out, err = _run(capsys, "examples/", "--format", "sarif", "--no-cache")
    assert code in (0, 1), err
    log = json.loads(out)
    validate_sarif(log)
    results = log["runs"][0]["results"]
    for res in results:
        uri = res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        assert uri.startswith("examples/") and "\\" not in uri
        assert res["locations"][0]["physicalLocation"]["region"]["startColumn"] >= 1


def test_sarif_of_fixtures_validates(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    code, out, err = _run(capsys, "tests/fixtures", "--format", "sarif", "--no-cache", "--show-suppressed")
    log = json.loads(out)
    validate_sarif(log)
    assert len(log["runs"][0]["results"]) > 20
    ids = {r["id"] for r in log["runs"][0]["tool"]["driver"]["rules"]}
    assert {r["ruleId"] for r in log["runs"][0]["results"]} <= ids


GITHUB_LINE = re.compile(
    r"^::(error|warning) file=[^,:]+,line=\d+,col=\d+,endLine=\d+,endColumn=\d+,title=CKP\d{3}::[^\r\n]+$"
)


def test_github_format(proj: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, ".", "--format", "github")
    lines = out.splitlines()
    assert code == 1 and len(lines) == 3
    assert all(GITHUB_LINE.match(line) for line in lines), lines
    assert lines[0].startswith("::error file=pkg/model.py,line=13,col=9,")


def test_output_file_and_statistics(proj: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, ".", "--format", "sarif", "--output-file", "reports/ckpt.sarif")
    assert code == 1 and out == ""
    validate_sarif(json.loads((proj / "reports" / "ckpt.sarif").read_text()))
    code, out, _ = _run(capsys, ".", "--statistics")
    assert re.search(r"^2\tCKP101\t\s*inplace-method-on-input$", out, re.M), out
    assert re.search(r"^1\tCKP105\t\[\*\] inplace-functional-on-input$", out, re.M), out
    code, out, _ = _run(capsys, ".", "--statistics", "--format", "json")
    assert {d["code"]: d["count"] for d in json.loads(out)} == {"CKP101": 2, "CKP105": 1}


def test_select_ignore_extend(proj: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert {c for _, _, c in _json(capsys, ".", "--select", "CKP105")} == {"CKP105"}
    assert {c for _, _, c in _json(capsys, ".", "--ignore", "CKP10")} == set()
    assert {c for _, _, c in _json(capsys, ".", "--select", "CKP105", "--extend-select", "CKP101")} == {"CKP101", "CKP105"}
    code, _, err = _run(capsys, ".", "--select", "CKP999")
    assert code == 2 and err.count("\n") == 1 and "'CKP999'" in err


def test_config_file_and_cli_override(proj: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (proj / "pyproject.toml").write_text(
        '[tool.ckptlint]\nignore = ["CKP105"]\n[tool.ckptlint.per-file-ignores]\n"pkg/model.py" = ["CKP101"]\n'
    )
    assert _json(capsys, ".") == []
    # --isolated ignores the file
    assert len(_json(capsys, ".", "--isolated")) == 3
    # the command line's --select starts afresh but per-file-ignores still apply
    assert _json(capsys, ".", "--select", "CKP1") == [("pkg/model.py", 15, "CKP105")]
    other = proj / "alt.toml"
    other.write_text('select = ["CKP105"]\n')
    assert _json(capsys, ".", "--config", str(other)) == [("pkg/model.py", 15, "CKP105")]


def test_bad_config_is_one_line_exit_2(proj: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (proj / "pyproject.toml").write_text('[tool.ckptlint]\nmax-helper-depth = "deep"\n')
    code, out, err = _run(capsys, ".")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "max-helper-depth" in err and "'deep'" in err and "pyproject.toml" in err
    assert "Traceback" not in err


def test_exclude_from_config(proj: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (proj / "pyproject.toml").write_text('[tool.ckptlint]\nextend-exclude = ["pkg"]\n')
    code, out, err = _run(capsys, ".")
    # Everything excluded: ruff's convention, a warning and exit 0.
    assert code == 0 and out == "" and "no Python files found" in err


def test_suppression_comments(proj: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = MODEL.replace("        x.add_(1)\n", "        x.add_(1)  # noqa: CKP101\n")
    src = src.replace(
        "        mask.masked_fill_(mask > 0, 0.0)\n",
        "        mask.masked_fill_(\n            mask > 0, 0.0\n        )  # ckptlint: ignore[CKP1]\n",
    )
    src = src.replace("        return self.fc(h) + mask\n", "        return self.fc(h) + mask  # ckptlint: ignore[CKP201]\n")
    (proj / "pkg" / "model.py").write_text(src)
    assert _json(capsys, ".") == [("pkg/model.py", 17, "CKP105")]
    code, out, _ = _run(capsys, ".", "--show-suppressed")
    assert "Suppressed (2):" in out
    assert ("pkg/model.py", 18, "CKP002") in _json(capsys, ".", "--report-unused-ignores")
    # the file-level switch
    (proj / "pkg" / "model.py").write_text("# ckptlint: skip-file\n" + MODEL)
    assert _json(capsys, ".") == []


def test_fix_diff_and_unsafe(proj: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = proj / "pkg" / "model.py"
    code, out, err = _run(capsys, ".", "--diff")
    assert code == 1 and path.read_text() == MODEL
    assert "-        h = F.relu(x, inplace=True)\n+        h = F.relu(x, inplace=False)\n" in out
    assert "x = x.add(1)" not in out  # unsafe: only with --unsafe-fixes
    code, out, err = _run(capsys, ".", "--diff", "--unsafe-fixes")
    assert "+        x = x.add(1)\n" in out and path.read_text() == MODEL

    code, out, err = _run(capsys, ".", "--fix")
    assert "inplace=False" in path.read_text() and "x.add_(1)" in path.read_text()
    assert "Fixed 1 finding" in out and code == 1
    code, out, err = _run(capsys, ".", "--unsafe-fixes")
    text = path.read_text()
    assert "x = x.add(1)" in text and "mask = mask.masked_fill(mask > 0, 0.0)" in text
    assert code == 0, out
    code, out, err = _run(capsys, ".", "--fix", "--unsafe-fixes")
    assert "Fixed 0 findings" in out and path.read_text() == text


def test_jobs_and_cache_do_not_change_results(capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(REPO / "tests" / "fixtures", tmp_path / "fx", ignore=shutil.ignore_patterns("__pycache__", ".ckptlint_cache"))
    monkeypatch.chdir(tmp_path)
    serial = _run(capsys, "fx", "--format", "json", "--no-cache", "--jobs", "1")
    pooled = _run(capsys, "fx", "--format", "json", "--no-cache", "--jobs", "2")
    first = _run(capsys, "fx", "--format", "json", "--jobs", "2")
    warm = _run(capsys, "fx", "--format", "json", "--jobs", "2")
    assert serial[1] == pooled[1] == first[1] == warm[1]
    assert (tmp_path / ".ckptlint_cache").is_dir() or any(tmp_path.glob("**/.ckptlint_cache"))


def test_bad_jobs_and_path(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["check", "--jobs", "0", "."])
    assert info.value.code == 2
    code, _, err = _run(capsys, "does/not/exist.py")
    assert code == 2 and "does not exist" in err


BLOCKS = '''\
from torch import nn


class Block(nn.Module):
    def forward(self, x):
        x.mul_(2)
        return x
'''

DRIVER = '''\
from torch import nn
from torch.utils.checkpoint import checkpoint

from .blocks import Block


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()

    def forward(self, x):
        return checkpoint(self.block, x, use_reentrant=False)
'''


@pytest.fixture
def cross(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "blocks.py").write_text(BLOCKS)
    (pkg / "model.py").write_text(DRIVER)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "p"\n')
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_cache_invalidates_when_a_dependency_changes(cross: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import os

    for p in (cross / "pkg").iterdir():  # old enough for the stat index
        st = p.stat()
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns - 60 * 10**9))
    assert _json(capsys, ".") == [("pkg/blocks.py", 6, "CKP101")]
    assert _json(capsys, ".") == [("pkg/blocks.py", 6, "CKP101")]  # warm
    assert any((cross / ".ckptlint_cache").iterdir())
    # blocks.py is not a driver (no checkpoint in it); model.py's cached
    # result depends on it and must be recomputed.
    (cross / "pkg" / "blocks.py").write_text(BLOCKS.replace("x.mul_(2)", "x = x * 2"))
    assert _json(capsys, ".") == []
    (cross / "pkg" / "blocks.py").write_text(BLOCKS)
    assert _json(capsys, ".") == [("pkg/blocks.py", 6, "CKP101")]


def test_fix_touches_only_checked_files_and_exclude_hides(cross: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Only model.py is checked (as pre-commit would pass it): the hazard in
    # blocks.py is reported but not rewritten.
    code, out, _ = _run(capsys, "pkg/model.py", "--unsafe-fixes")
    assert code == 1 and "pkg/blocks.py:6:9: CKP101" in out
    assert (cross / "pkg" / "blocks.py").read_text() == BLOCKS
    code, out, _ = _run(capsys, ".", "--unsafe-fixes")
    assert code == 0 and "x = x.mul(2)" in (cross / "pkg" / "blocks.py").read_text()
    (cross / "pkg" / "blocks.py").write_text(BLOCKS)
    assert _json(capsys, ".", "--extend-exclude", "blocks.py") == []


def test_diff_with_warm_cache_sees_in_memory_fixes(cross: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import os

    for p in (cross / "pkg").iterdir():
        st = p.stat()
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns - 60 * 10**9))
    _run(capsys, ".")  # fills the cache with model.py's result (depends on blocks.py)
    code, out, err = _run(capsys, ".", "--diff", "--unsafe-fixes")
    assert "+        x = x.mul(2)\n" in out
    # the re-lint after the in-memory fix must not serve model.py's cached
    # result (its dependency changed in memory)
    assert "(0 would remain)" in err, err
    assert (cross / "pkg" / "blocks.py").read_text() == BLOCKS
    assert _json(capsys, ".") == [("pkg/blocks.py", 6, "CKP101")]  # the cache still holds disk truth
