"""The distributed path from pytest (marker world_size=) and from the CLI (--nproc): one spawn each."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("torch")

MODELS = Path(__file__).with_name("dist_models.py")


def test_marker_with_world_size_verifies_under_ddp(pytester: pytest.Pytester):
    pytester.makepyfile(dist_models=MODELS.read_text())
    pytester.makepyfile(
        test_dist=textwrap.dedent(
            """
            import pytest, torch
            import dist_models

            X = torch.randn(4, dist_models.WIDTH)

            @pytest.mark.ckpt_equivalence(model=dist_models.BatchNormBlocks, inputs=X, world_size=2, wrap="ddp")
            def test_batchnorm_blocks_under_ddp():
                pass

            @pytest.mark.ckpt_equivalence(inputs=X, world_size=2)
            def test_built_model_is_refused():
                return dist_models.BatchNormBlocks()
            """
        )
    )
    result = pytester.runpytest_subprocess("-p", "ckptlint", "-q")
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    assert "NOT EQUIVALENT under DDP (2 ranks, gloo)" in out
    assert "blocks.0.1.running_mean" in out
    assert "give a model factory (each rank builds its own model)" in out


def test_cli_nproc_exit_code_and_report(tmp_path: Path):
    (tmp_path / "dist_models.py").write_text(MODELS.read_text())
    proc = subprocess.run(
        [sys.executable, "-m", "ckptlint", "verify", "dist_models.py:BatchNormBlocks", "--input", "float32[B,8]",
         "--dim", "B=4:8", "--nproc", "2", "--hypothesis-seed", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=400,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "NOT EQUIVALENT under DDP (2 ranks, gloo)" in proc.stdout
    assert "reproduce: ckptlint verify dist_models.py:BatchNormBlocks" in proc.stdout
    assert "--nproc 2 --hypothesis-seed 1" in proc.stdout
    assert "Traceback" not in proc.stderr
