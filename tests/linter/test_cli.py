"""The linter's command line: check on examples, rule docs, exit codes, JSON, verify dispatch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ckptlint.cli import main
from ckptlint.rules import ALL_RULES

ROOT = Path(__file__).resolve().parents[2]


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_examples_report_all_four_families(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    code, out, _ = run(["check", "examples/", "--no-cache", "--format", "json"], capsys)
    assert code == 1
    data = json.loads(out)
    assert {d["code"][:4] for d in data} >= {"CKP1", "CKP2", "CKP3", "CKP4"}
    for d in data:
        assert {"code", "message", "path", "line", "column", "end_line", "end_column", "callable", "checkpoint_site"} <= set(d)
        assert d["column"] >= 1 and d["end_column"] >= 1
        # Every finding names the checkpointed callable and the call site that checkpoints it.
        assert d["callable"] and d["checkpoint_site"]["path"].startswith("examples/")
        if d["code"].startswith("CKP4"):
            assert d["checkpoint_site"]["line"] == d["line"] and f"of '{d['callable']}'" in d["message"]
        else:
            assert f"checkpointed at {d['checkpoint_site']['path']}:{d['checkpoint_site']['line']}" in d["message"]


def test_clean_model_exits_zero_and_text_format(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    code, out, _ = run(["check", "examples/clean_model.py", "--no-cache"], capsys)
    assert code == 0 and "All checks passed" in out


def test_text_output_has_location_source_and_caret(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.py").write_text(
        textwrap.dedent(
            """\
            from torch.utils.checkpoint import checkpoint
            def f(x):
                x.add_(1)
                return x
            y = checkpoint(f, data, use_reentrant=False)
            """
        )
    )
    code, out, _ = run(["check", "m.py", "--no-cache"], capsys)
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith("m.py:3:5: CKP101 in-place add_() on input 'x' of checkpointed 'f' (checkpointed at m.py:5)")
    assert "3 |     x.add_(1)" in out
    assert "  |     ^^^^^^^^^" in out
    assert "\x1b[" not in out  # no colour when not a TTY
    assert lines[-2].startswith("Found 1 finding")
    assert lines[-1] == "No fixes available with --fix (1 with --unsafe-fixes)."


def test_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.py").write_text("def f(:\n    pass\n")
    code, out, _ = run(["check", "bad.py", "--no-cache"], capsys)
    assert code == 1 and "CKP001" in out
    code, out, _ = run(["check", "bad.py", "--no-cache", "--exit-zero"], capsys)
    assert code == 0
    code, _, err = run(["check", "does-not-exist.py", "--no-cache"], capsys)
    assert code == 2 and "does-not-exist.py" in err and "Traceback" not in err


def test_rule_docs(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["rule", "CKP204"], capsys)
    assert code == 0
    assert "batchnorm-running-stats" in out and "Why it breaks checkpointing" in out and "How to fix" in out
    code, out, _ = run(["rule", "--all"], capsys)
    assert code == 0
    for rule in ALL_RULES:
        assert rule.CODE in out
    code, _, err = run(["rule", "CKP999"], capsys)
    assert code == 2 and "CKP999" in err


def test_python_dash_m(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "ckptlint", "rule", "CKP101"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0 and "inplace-method-on-input" in proc.stdout


def test_verify_without_runtime_extra(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None
        sys.path.insert(0, {str(ROOT)!r})
        from ckptlint.cli import main
        sys.exit(main(["verify", "whatever.py"]))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2
    assert "pip install 'ckptlint[runtime]'" in proc.stderr
    assert "Traceback" not in proc.stderr
