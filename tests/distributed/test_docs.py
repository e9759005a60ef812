"""docs/distributed.md stays true: its Python script, its CLI example and its pytest example run as shown."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

DOC = Path(__file__).resolve().parents[2] / "docs" / "distributed.md"
TEXT = DOC.read_text()


def _block(lang: str, needle: str) -> str:
    blocks = [b for b in re.findall(rf"```{lang}\n(.*?)```", TEXT, flags=re.S) if needle in b]
    assert len(blocks) == 1, f"expected one {lang} block containing {needle!r} in {DOC}"
    return blocks[0]


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(cwd), *sys.path]))
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def test_python_example_runs_as_a_script(tmp_path: Path) -> None:
    (tmp_path / "check_ddp.py").write_text(_block("python", "check_ddp.py"))
    proc = _run([sys.executable, "check_ddp.py"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    printed = _block("text", "NOT EQUIVALENT under DDP")
    for line in printed.splitlines()[1:6]:  # the table and the explanation, not the timings
        assert line.strip() in proc.stdout


def test_cli_and_pytest_examples_run(tmp_path: Path) -> None:
    script = _block("bash", "--nproc 2").replace("/tmp/dist_model.py", str(tmp_path / "dist_model.py"))
    script = script.replace("ckptlint verify", f"{sys.executable} -m ckptlint verify")
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "EQUIVALENT under FSDP2 on 2 processes" in proc.stdout
    # The pytest example, with mymodels.build_model being the CLI example's model.
    (tmp_path / "mymodels.py").write_text(
        (tmp_path / "dist_model.py").read_text().replace("8", "16") + "\n\ndef build_model():\n    return Net()\n"
    )
    (tmp_path / "test_doc_example.py").write_text(_block("python", "def test_checkpointing_under_ddp"))
    proc = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_doc_example.py",
                 "--ckpt-require-device"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "ddp x2 (gloo)" in proc.stdout
