"""Deep nesting, dying workers and per-file budgets: a per-file finding, never a crash or a hang."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import DRIVER, driver_tree

DEEP_PARENS = "x = " + "(" * 1300 + "1" + ")" * 1300 + "\n"  # Python: "too many nested parentheses"


def _by_path(run, path: str) -> list[dict]:
    return [f for f in run.findings() if f["path"] == path]


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_deep_nesting_is_python_syntax_error_and_run_ends(tmp_path: Path, ckptlint_cli, jobs: str) -> None:
    # This file segfaulted libcst's native parser; in a pooled run the lost task hung the run.
    driver_tree(tmp_path)
    (tmp_path / "deep.py").write_text("from torch.utils.checkpoint import checkpoint\n" + DEEP_PARENS)
    (tmp_path / "deep_plain.py").write_text(DEEP_PARENS)
    run = ckptlint_cli(["check", "--no-cache", "-j", jobs, "--format", "json", "."], tmp_path, timeout=120)
    assert run.returncode == 1, run.stderr
    for name in ("deep.py", "deep_plain.py"):
        (finding,) = _by_path(run, name)
        assert finding["code"] == "CKP001"
        assert "too many nested parentheses" in finding["message"]  # Python's own message
        assert (finding["line"], finding["column"]) == (2 if name == "deep.py" else 1, 205)
    assert sum(f["code"] == "CKP101" for f in run.findings()) == 6


def test_statement_nested_past_max_nesting_is_reported_not_parsed(tmp_path: Path, ckptlint_cli) -> None:
    # 150 levels: Python accepts it, libcst would spend seconds (minutes at ~3,000).
    (tmp_path / "model.py").write_text(
        DRIVER + "def h(x):\n    return x + " + "[" * 150 + "1" + "]" * 150 + "\n"
        "def f2(x):\n    return checkpoint(h, x, use_reentrant=False)\n"
    )
    run = ckptlint_cli(["check", "--no-cache", "--format", "json", "."], tmp_path)
    got = {(f["line"], f["code"]) for f in run.findings()}
    assert (7, "CKP003") in got and (5, "CKP101") in got, run.stdout
    (tmp_path / "pyproject.toml").write_text("[tool.ckptlint]\nmax-nesting = 200\n")
    run = ckptlint_cli(["check", "--no-cache", "--format", "json", "."], tmp_path)
    assert "CKP003" not in {f["code"] for f in run.findings()}


@pytest.mark.parametrize("jobs", ["2", "3"])
def test_dying_worker_reports_the_file_and_checks_the_rest(tmp_path: Path, ckptlint_cli, jobs: str) -> None:
    driver_tree(tmp_path, 8)
    (tmp_path / "boom.py").write_text(DRIVER)
    run = ckptlint_cli(["check", "--no-cache", "-j", jobs, "--format", "json", "."], tmp_path, fault="segv:boom")
    assert run.returncode == 1, run.stderr
    (died,) = _by_path(run, "boom.py")
    assert died["code"] == "CKP003" and "worker process" in died["message"]
    assert sorted(f["path"] for f in run.findings() if f["code"] == "CKP101") == [f"m{i}.py" for i in range(8)]


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_file_timeout(tmp_path: Path, ckptlint_cli, jobs: str) -> None:
    driver_tree(tmp_path)
    (tmp_path / "slow.py").write_text(DRIVER)
    (tmp_path / "pyproject.toml").write_text("[tool.ckptlint]\nfile-timeout = 1\n")
    run = ckptlint_cli(["check", "--no-cache", "-j", jobs, "--format", "json", "."], tmp_path, fault="sleep:slow",
                       timeout=60)
    assert run.returncode == 1, run.stderr
    (slow,) = _by_path(run, "slow.py")
    assert slow["code"] == "CKP003" and "file-timeout (1 s)" in slow["message"]
    assert sum(f["code"] == "CKP101" for f in run.findings()) == 6


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_file_memory_budget(tmp_path: Path, ckptlint_cli, jobs: str) -> None:
    driver_tree(tmp_path)
    rows = ", ".join(str(i) for i in range(20)) + ",\n"
    (tmp_path / "table.py").write_text("from torch.utils.checkpoint import checkpoint\nT = [\n" + rows * 40_000 + "]\n")
    (tmp_path / "pyproject.toml").write_text("[tool.ckptlint]\nmax-file-memory = 64\n")
    run = ckptlint_cli(["check", "--no-cache", "-j", jobs, "--format", "json", "."], tmp_path)
    assert run.returncode == 1, run.stderr
    (table,) = _by_path(run, "table.py")
    assert table["code"] == "CKP003" and "max-file-memory (64 MiB)" in table["message"]
    assert sum(f["code"] == "CKP101" for f in run.findings()) == 6


def test_max_file_bytes(tmp_path: Path, ckptlint_cli) -> None:
    (tmp_path / "big.py").write_text("# noqa: CKP003\nx = [" + "1, " * 5000 + "]\n")
    (tmp_path / "small.py").write_text(DRIVER)
    (tmp_path / "pyproject.toml").write_text("[tool.ckptlint]\nmax-file-bytes = 10000\n")
    run = ckptlint_cli(["check", "--no-cache", "--format", "json", "."], tmp_path)
    assert run.codes() == [("big.py", "CKP003"), ("small.py", "CKP101")]
    assert "15,022 bytes, more than max-file-bytes (10,000)" in _by_path(run, "big.py")[0]["message"]


@pytest.mark.parametrize(
    ("line", "bad"),
    [("max-file-bytes = -1", "-1"), ("file-timeout = 'slow'", "'slow'"), ("max-nesting = true", "True")],
)
def test_budget_keys_are_validated(tmp_path: Path, ckptlint_cli, line: str, bad: str) -> None:
    (tmp_path / "pyproject.toml").write_text(f"[tool.ckptlint]\n{line}\n")
    (tmp_path / "a.py").write_text("x = 1\n")
    run = ckptlint_cli(["check", "--no-cache", "."], tmp_path)
    assert run.returncode == 2
    assert f"= {bad}: expected" in run.stderr and "Traceback" not in run.stderr
