"""``ckptlint verify``: exit codes, one-line errors, progress on stderr, the report on stdout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("hypothesis")

from runtime_checks.cli import main  # noqa: E402

DATA = Path(__file__).parent / "data" / "cli_models.py"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_equivalent_model_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, f"{DATA}:safe", "--input", "float32[B,16]", "--checkpoint-type", "Block", "--examples", "3")
    assert code == 0, out + err
    assert out.startswith("EQUIVALENT on 3 example(s)")
    assert "checkpoint regions: 1, 2" in out
    assert "example 1/3: ok" in err  # not a TTY: one line per example


def test_counterexample_exits_1_with_localised_report(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, f"{DATA}:unsafe", "--input", "float32[B,16]", "--checkpoint-type", "CountingBlock",
        "--examples", "3", "--hypothesis-seed", "1",
    )
    assert code == 1
    assert "NOT EQUIVALENT: smallest failing input (float32[1, 16])" in out
    assert "--hypothesis-seed 1" in out
    assert "grad  2.b.weight" in out


def test_keyword_inputs_and_reentrant(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, f"{DATA}:Keyword", "--input", "ids=int64[B,T]:0:50", "--input", "scale=float32[B,T,1]+grad",
        "--dim", "T=2:5", "--checkpoint-type", "Block", "--reentrant", "--examples", "2",
    )
    assert code == 0, out + err
    assert "checkpoint regions: block" in out


def test_module_instance_target(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, f"{DATA}:instance", "--input", "float32[2,16]", "--checkpoint-type", "Block", "--examples", "1")
    assert code == 0, err


@pytest.mark.parametrize(
    "argv,message",
    [
        ([f"{DATA}:nope", "--input", "float32[B,16]"], "has no attribute 'nope'"),
        (["no_such_module_xyz:f", "--input", "float32[B,16]"], "no module named"),
        (["justaname", "--input", "float32[B,16]"], "must be MODULE:FACTORY"),
        ([f"{DATA}:safe", "--input", "float33[B,16]"], "unknown dtype 'float33'"),
        ([f"{DATA}:safe", "--input", "float32[B,?]"], "neither an int nor a name"),
        ([f"{DATA}:safe"], "at least one --input"),
        ([f"{DATA}:safe", "--input", "float32[B,16]", "--dim", "B=x"], "bad --dim"),
        ([f"{DATA}:safe", "--input", "float32[B,16]", "--checkpoint-type", "Nope"], "no submodule"),
        ([f"{DATA}:broken", "--input", "float32[B,16]"], "raised RuntimeError: cannot build"),
        ([f"{DATA}:safe", "--input", "x=float32[B,16]"], "without checkpointing too"),
    ],
)
def test_user_errors_are_one_line_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.startswith("ckptlint verify: error:")]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err


def test_console_script_end_to_end() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ckptlint", "verify", f"{DATA}:unsafe", "--input", "float32[B,16]",
         "--checkpoint-type", "CountingBlock", "--examples", "2", "--hypothesis-seed", "3"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "NOT EQUIVALENT" in proc.stdout


def test_without_torch_names_the_extra(tmp_path: Path) -> None:
    # A sitecustomize that hides torch, as in an environment without the runtime extra.
    (tmp_path / "sitecustomize.py").write_text(
        "import importlib.abc, sys\n"
        "class Hide(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, Hide())\n"
    )
    import os

    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "ckptlint", "verify", "x:y", "--input", "float32[2]"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert proc.returncode == 2
    assert "ckptlint[runtime]" in proc.stderr and "Traceback" not in proc.stderr
    # and the runtime CLI says so itself, naming what is missing
    from runtime_checks import cli

    real = cli._installed
    try:
        cli._installed = lambda name: name != "torch"  # type: ignore[assignment]
        assert cli.main(["x:y", "--input", "float32[2]"]) == 2
    finally:
        cli._installed = real  # type: ignore[assignment]
