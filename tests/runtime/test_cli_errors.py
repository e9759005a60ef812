"""``ckptlint verify``: the user's own import/syntax/model errors, Ctrl-C, JSON output, the reproduce line."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("hypothesis")

from ckptlint.cli import _missing_runtime  # noqa: E402
from runtime_checks.cli import main  # noqa: E402

DATA = Path(__file__).parent / "data" / "cli_models.py"
SAFE = ["--input", "float32[B,16]", "--checkpoint-type", "Block", "--examples", "2"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from ckptlint.cli import main as ckptlint_main

    code = ckptlint_main(["verify", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "source,message",
    [
        ("from nonexistent_pkg_xyz import thing\n", "ModuleNotFoundError: No module named 'nonexistent_pkg_xyz'"),
        ("from torch import not_a_torch_name\n", "ImportError: cannot import name 'not_a_torch_name'"),
        ("raise ImportError('the user module refuses')\n", "ImportError: the user module refuses"),
        ("import torch\n\ndef f(:\n    pass\n", "SyntaxError"),
        ("import torch\nx = 1 / 0\n", "ZeroDivisionError: division by zero"),
    ],
    ids=["missing-package", "torch-name", "plain-importerror", "syntax", "runtime"],
)
def test_errors_importing_the_target_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], source: str, message: str
) -> None:
    target = tmp_path / "usermodel.py"
    target.write_text(source)
    code, out, err = run(capsys, f"{target}:f", *SAFE)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "runtime extra" not in err
    assert message in lines[0] and f"{target}:" in lines[0], err  # file:line: message
    line = 3 if "syntax" in source or "def f(:" in source else (2 if "1 / 0" in source else 1)
    assert f"{target}:{line}:" in lines[0], err


def test_errors_importing_a_target_module_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "userpkg_ckpt_errors.py").write_text("from torch import not_a_torch_name\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code, _, err = run(capsys, "userpkg_ckpt_errors:f", *SAFE)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "cannot import name 'not_a_torch_name'" in err and "runtime extra" not in err


def test_missing_runtime_only_for_a_really_missing_package() -> None:
    assert _missing_runtime(ModuleNotFoundError("No module named 'torchx_missing'", name="torchx_missing")) is False
    assert _missing_runtime(ImportError("cannot import name 'x' from 'torch'", name="torch")) is False  # torch is here
    assert _missing_runtime(ImportError("custom")) is False
    assert _missing_runtime(ModuleNotFoundError("No module named 'mypkg'", name="mypkg")) is False


def test_model_failing_without_checkpointing_names_its_source_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, f"{DATA}:safe", "--input", "x=float32[B,16]", "--checkpoint-type", "Block", "--examples", "1")
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.startswith("ckptlint verify: error:")]
    assert len(lines) == 1 and "without checkpointing too" in lines[0]
    assert "Traceback" not in err and "runtime_checks" not in lines[0], err
    # A bug inside the model's forward: its own error, at its own source line.
    code, _, err = run(capsys, f"{DATA}:Reshaping", "--input", "float32[B,16]", "--checkpoint-type", "Block",
                       "--examples", "1")
    assert code == 2
    (line,) = [ln for ln in err.splitlines() if ln.startswith("ckptlint verify: error:")]
    lineno = next(i for i, src in enumerate(DATA.read_text().splitlines(), 1) if ".view(-1, 7)" in src)
    assert "without checkpointing too" in line and "RuntimeError" in line, line
    assert f"(at {DATA}:{lineno}: return self.block(x).view(-1, 7)" in line, line
    assert "Traceback" not in err
    # Raised by autograd in backward, where no frame of the model is left: say how to find the line.
    code, _, err = run(capsys, f"{DATA}:OverwritesSaved", "--input", "float32[B,16]", "--checkpoint-type", "Block",
                       "--examples", "1")
    assert code == 2
    (line,) = [ln for ln in err.splitlines() if ln.startswith("ckptlint verify: error:")]
    assert "modified by an inplace operation" in line and "set_detect_anomaly(True)" in line, line


def test_json_format_is_the_documented_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, f"{DATA}:unsafe", "--input", "float32[B,16]", "--checkpoint-type", "CountingBlock",
                       "--examples", "2", "--hypothesis-seed", "1", "--format", "json")
    assert code == 1
    payload = json.loads(out)
    _validate(payload, equivalent=False)
    assert "--hypothesis-seed 1" in payload["reproduce"]
    code, out, _ = run(capsys, f"{DATA}:safe", *SAFE, "--format", "json")
    assert code == 0
    _validate(json.loads(out), equivalent=True)


def _validate(payload: dict[str, object], *, equivalent: bool) -> None:
    """The keys docs/runtime.md promises, with their types."""
    assert set(payload) == {"target", "equivalent", "examples", "failing_input", "reproduce", "report"}
    assert payload["equivalent"] is equivalent and isinstance(payload["examples"], int)
    report = payload["report"]
    assert isinstance(report, dict)
    required = {"schema_version": int, "equivalent": bool, "mismatches": list, "regions": list, "memory": dict,
                "timing": dict, "device": str, "noisy": list, "notes": list}
    for key, typ in required.items():
        assert isinstance(report[key], typ), key
    assert report["schema_version"] == 1 and report["equivalent"] is equivalent
    for m in report["mismatches"]:
        assert set(m) >= {"kind", "name", "max_abs_err", "max_rel_err", "region", "detail"}
        assert m["max_abs_err"] is None or isinstance(m["max_abs_err"], float)
    assert set(report["memory"]) >= {"saved_bytes_checkpointed", "saved_bytes_baseline", "saved_bytes_saved", "per_region", "cuda_max_allocated"}
    assert set(report["timing"]) >= {"checkpointed_s", "baseline_s", "ratio"}
    json.dumps(payload, allow_nan=False)  # strict JSON: no Infinity/NaN


def test_reproduce_line_is_copy_pasteable(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [f"{DATA}:unsafe", "--input", "float32[B,16]", "--checkpoint-type", "CountingBlock", "--examples", "2", "--hypothesis-seed", "1"]
    code, out, _ = run(capsys, *argv)
    assert code == 1
    line = next(ln for ln in out.splitlines() if ln.startswith("reproduce: "))
    command = line[len("reproduce: "):]
    assert "..." not in command
    words = shlex.split(command)
    assert words[:2] == ["ckptlint", "verify"] and words[2:] == argv
    assert main(words[2:]) == 1  # the same verdict when pasted
    capsys.readouterr()


def test_ctrl_c_is_one_line_exit_130(tmp_path: Path) -> None:
    (tmp_path / "slow.py").write_text(
        "import sys, time, torch\n"
        "class Slow(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.lin = torch.nn.Linear(16, 16)\n"
        "    def forward(self, x):\n"
        "        print('RUNNING', file=sys.stderr, flush=True)\n"
        "        time.sleep(60)\n"
        "        return self.lin(x)\n"
        "def f():\n"
        "    return Slow()\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ckptlint", "verify", f"{tmp_path / 'slow.py'}:f", "--input", "float32[2,16]", "--examples", "1"],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert proc.stderr is not None
        deadline = time.time() + 120
        while time.time() < deadline:
            if "RUNNING" in proc.stderr.readline():
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "ckptlint verify: interrupted", err
