"""Run ``ckptlint`` in a subprocess: a crash or hang there must not take pytest with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from .hostile import HOSTILE_DRIVER

REPO = Path(__file__).resolve().parents[2]

# A stand-in for ``python -m ckptlint`` that can inject faults into the engine
# inside worker processes (they are forked from this process, so the patch is
# inherited): ``CKPTLINT_TEST_FAULT=segv:NAME`` kills the process checking a
# file whose path contains NAME, ``sleep:NAME`` makes it hang in Python code.
_LAUNCHER = """
import os, signal, sys, time
fault = os.environ.get("CKPTLINT_TEST_FAULT", "")
if fault:
    import ckptlint.engine as engine
    kind, _, needle = fault.partition(":")
    real = engine.analyze_file
    def analyze_file(project, path, options=engine.EngineOptions()):
        if needle in path:
            if kind == "segv":
                os.kill(os.getpid(), signal.SIGSEGV)
            elif kind == "sleep":
                time.sleep(3600)
        return real(project, path, options)
    engine.analyze_file = analyze_file
from ckptlint.cli import main
sys.exit(main(sys.argv[1:]))
"""


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str

    def findings(self) -> list[dict]:
        return json.loads(self.stdout) if self.stdout.strip().startswith("[") else []

    def codes(self) -> list[tuple[str, str]]:
        return sorted((f["path"], f["code"]) for f in self.findings())


@pytest.fixture
def ckptlint_cli():
    """``ckptlint_cli(args, cwd, fault=None, timeout=120)``: run the CLI in a subprocess."""

    def run(args: list[str], cwd: Path, *, fault: str | None = None, timeout: float = 120) -> Run:
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.pop("CKPTLINT_TEST_FAULT", None)
        if fault:
            env["CKPTLINT_TEST_FAULT"] = fault
        proc = subprocess.run(
            [sys.executable, "-c", _LAUNCHER, *args], cwd=cwd, env=env, capture_output=True, timeout=timeout
        )
        return Run(proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"))

    return run


DRIVER = HOSTILE_DRIVER


def driver_tree(root: Path, count: int = 6) -> None:
    """``count`` files each with one CKP101: enough analyses to start a worker pool."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (root / f"m{i}.py").write_text(DRIVER)
