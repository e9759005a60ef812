"""Property and whole-tree tests: never crash, lint our own source, run without torch."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from ckptlint.engine import EngineOptions, Project, analyze_file, lint

hypothesmith = pytest.importorskip("hypothesmith", reason="hypothesmith is in the test extra")

ROOT = Path(__file__).resolve().parents[2]

# Generated programs rarely mention checkpoint; prepend a header so the
# discovery and flow analysis actually run over the generated code.
HEADER = textwrap.dedent(
    """\
    import torch
    from torch.utils.checkpoint import checkpoint
    """
)


@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(hypothesmith.from_node())
def test_never_raises_on_generated_programs(tmp_path_factory: pytest.TempPathFactory, source: str) -> None:
    root = tmp_path_factory.mktemp("gen")
    path = root / "gen.py"
    # Wrap generated code so its functions are checkpointed where they can be.
    tail = "\n\ndef _run(x):\n    return checkpoint(_run, x)\n"
    path.write_text(HEADER + source + tail, encoding="utf-8")
    result = analyze_file(Project([str(path)]), str(path), EngineOptions())
    assert result.error is None, result.error


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(hypothesmith.from_grammar())
def test_never_raises_on_grammar_programs(tmp_path_factory: pytest.TempPathFactory, source: str) -> None:
    root = tmp_path_factory.mktemp("gram")
    path = root / "gen.py"
    path.write_text(HEADER + source, encoding="utf-8")
    result = analyze_file(Project([str(path)]), str(path), EngineOptions())
    assert result.error is None, result.error


def test_lints_its_own_source_without_internal_errors() -> None:
    result = lint([str(ROOT / "ckptlint"), str(ROOT / "examples")])
    assert result.errors == ()
    assert result.files_checked > 20
    # The examples carry one hazard family each; ckptlint's own code none.
    assert not [f for f in result.findings if "/ckptlint/" in "/" + f.path.replace(os.sep, "/")]
    families = {f.code[:4] for f in result.findings}
    assert {"CKP1", "CKP2", "CKP3", "CKP4"} <= families


def test_linter_runs_with_torch_absent(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # any "import torch" now raises ImportError
        sys.path.insert(0, {str(ROOT)!r})
        from ckptlint.cli import main
        code = main(["check", {str(ROOT / "examples" / "hazards")!r}, "--no-cache"])
        assert "torch" not in sys.modules or sys.modules["torch"] is None
        print("exit", code)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "exit 1" in proc.stdout, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(("terms", "expected"), [(3000, [("CKP001", 1)]), (2000, [("CKP003", 2)])])
def test_very_deep_expressions_do_not_crash(tmp_path: Path, terms: int, expected: list) -> None:
    # 3,000 terms: Python's compiler gives up (RecursionError), so CKP001 like
    # ``python deep.py`` would; 2,000: Python accepts, the statement nests
    # past max-nesting and is reported (CKP003) instead of handed to libcst.
    chain = " + ".join(["a"] * terms)
    src = (
        "from torch.utils.checkpoint import checkpoint\n"
        f"def f(a):\n    a.add_(1)\n    x = {chain}\n    return x\n"
        "y = checkpoint(f, 1, use_reentrant=False)\n"
        f"z = {chain}\n"
    )
    path = tmp_path / "deep.py"
    path.write_text(src)
    result = lint([str(path)])
    assert result.errors == ()
    assert [(f.code, f.line) for f in result.findings] == expected
