"""The pre-commit hooks, through ``pre-commit try-repo`` (builds an env from PyPI)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

HAZARD = '''\
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


class Block(nn.Module):
    def forward(self, x):
        x.add_(1)
        return x


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()

    def forward(self, x):
        return checkpoint(self.block, x, use_reentrant=False)
'''

CLEAN = HAZARD.replace("        x.add_(1)\n", "        x = x + 1\n")


def _pre_commit() -> list[str]:
    exe = Path(sys.executable).parent / "pre-commit"
    if exe.exists():
        return [str(exe)]
    if shutil.which("pre-commit"):
        return ["pre-commit"]
    pytest.skip("pre-commit is not installed")


def _index_reachable(tmp: Path) -> str | None:
    """None if pip can fetch from the configured package index, else why not.

    ``try-repo`` builds the hook's environment with pip; a bounded probe (one
    small download, no retries, a short timeout) tells "no registry here"
    apart from a real failure before the slow part starts.
    """
    env = dict(os.environ, PIP_DEFAULT_TIMEOUT="10", PIP_RETRIES="0", PIP_DISABLE_PIP_VERSION_CHECK="1")
    try:
        probe = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(tmp / "probe"), "libcst"],
            capture_output=True, text=True, env=env, timeout=60,
        )
    except subprocess.TimeoutExpired:
        return "pip download libcst timed out after 60 s"
    if probe.returncode != 0:
        return "pip download libcst failed: " + (probe.stderr.strip().splitlines() or ["?"])[-1]
    return None


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def _try_repo(tmp: Path, body: str) -> subprocess.CompletedProcess[str]:
    work = tmp / "project"
    work.mkdir(parents=True)
    _git(work, "init", "-q")
    _git(work, "config", "user.email", "t@example.com")
    _git(work, "config", "user.name", "t")
    (work / "model.py").write_text(body)
    _git(work, "add", "model.py")
    env = dict(os.environ, PRE_COMMIT_COLOR="never", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return subprocess.run(
        [*_pre_commit(), "try-repo", str(REPO), "ckptlint", "--all-files", "--verbose"],
        cwd=work,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


@pytest.mark.network
@pytest.mark.slow
def test_hook_fails_on_hazard_and_passes_on_clean(tmp_path: Path) -> None:
    assert (REPO / ".pre-commit-hooks.yaml").is_file()
    _pre_commit()
    why = _index_reachable(tmp_path)
    if why is not None:
        pytest.skip(f"the package index is unreachable, so pre-commit cannot build the hook env ({why})")
    bad = _try_repo(tmp_path / "bad", HAZARD)
    out = bad.stdout + bad.stderr
    if "Could not find a version" in out or "Network is unreachable" in out:
        pytest.skip("pre-commit could not build the hook env (no package index): " + out[-300:])
    assert bad.returncode == 1, out
    assert "CKP101" in out and "model.py:8" in out, out
    good = _try_repo(tmp_path / "good", CLEAN)
    assert good.returncode == 0, good.stdout + good.stderr
