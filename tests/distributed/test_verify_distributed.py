"""verify_distributed on 2 CPU processes (gloo): DDP and FSDP2, the DDP + reentrant failure, dead and failing ranks.

Each call spawns two fresh interpreters (about 10-20 s on 2 cores), so every case checks several things at once.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402

from runtime_checks.distributed import DistributedError, verify_distributed  # noqa: E402

from . import dist_models  # noqa: E402

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")


def _children() -> set[int]:
    """PIDs of live (non-zombie) rank processes started by this process, read from /proc.

    Ranks run ``multiprocessing.spawn.spawn_main``; multiprocessing's own resource tracker (one per parent,
    for its lifetime) is not a rank.
    """
    me, out = os.getpid(), set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) != me or fields[0] == "Z":
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            out.add(int(entry.name))
    return out


def _temp_dirs() -> set[str]:
    import tempfile

    return {p.name for p in Path(tempfile.gettempdir()).glob("ckptlint-dist-*")}


@pytest.fixture
def no_leftovers():
    before_children, before_dirs = _children(), _temp_dirs()
    yield
    assert _children() <= before_children, "a rank process outlived verify_distributed"
    assert _temp_dirs() <= before_dirs, "a temporary directory was left behind"


def _x() -> torch.Tensor:
    return torch.randn(4, dist_models.WIDTH, generator=torch.Generator().manual_seed(0))


transformers = None
try:
    import transformers  # noqa: F401
except ImportError:  # pragma: no cover - CI installs it
    pass


@pytest.mark.skipif(transformers is None, reason="transformers not installed")
@pytest.mark.parametrize("wrap", ["ddp", "fsdp2"])
def test_tiny_transformer_with_gradient_checkpointing_passes(wrap, no_leftovers):
    ids = torch.randint(0, 100, (4, 16), generator=torch.Generator().manual_seed(0))
    report = verify_distributed(dist_models.gpt2_tiny, {"input_ids": ids, "labels": ids}, world_size=2, wrap=wrap)
    assert report.equivalent, str(report)
    assert len(report.ranks) == 2
    assert report.ranks[0].regions == ("transformer.h.0", "transformer.h.1")
    assert all(r.memory.saved_bytes_baseline > 0 for r in report.ranks)
    assert f"under {wrap.upper()} (2 ranks, gloo)" in str(report)


def test_ddp_reentrant_with_tied_weights_is_explained(no_leftovers):
    report = verify_distributed(dist_models.tied_reentrant, _x(), world_size=2, wrap="ddp")
    assert not report.equivalent
    for rank in report.ranks:
        (error,) = [m for m in rank.mismatches if m.kind == "error"]
        assert "marked ready twice" in error.detail
        assert "use_reentrant=False" in error.detail and "static_graph=True" in error.detail
        assert "'b.weight'" in error.detail or "'a.weight'" in error.detail  # the shared parameter, named
    assert "ranks" in str(report) and "all" in str(report)


@pytest.mark.parametrize(
    "factory, wrap_kwargs",
    [(dist_models.tied_reentrant, {"static_graph": True}), (dist_models.tied_non_reentrant, {})],
    ids=["reentrant-static-graph", "non-reentrant"],
)
def test_both_fixes_of_the_ddp_reentrant_failure_pass(factory, wrap_kwargs):
    report = verify_distributed(factory, _x(), world_size=2, wrap="ddp", wrap_kwargs=wrap_kwargs)
    assert report.equivalent, str(report)


def test_batchnorm_under_ddp_reports_buffers_on_every_rank():
    report = verify_distributed(dist_models.BatchNormBlocks, _x(), world_size=2, wrap="ddp")
    assert not report.equivalent
    for rank in report.ranks:
        names = {(m.kind, m.name, m.region) for m in rank.mismatches}
        assert ("buffer", "blocks.0.1.running_mean", "blocks.0") in names
        assert ("buffer", "blocks.1.1.num_batches_tracked", "blocks.1") in names


def test_a_killed_rank_ends_the_call_within_its_timeout(no_leftovers):
    start = time.monotonic()
    with pytest.raises(DistributedError, match=r"^rank 1: died \(SIGKILL\) before reporting; rank 0: (lost contact|stopped: another rank failed)"):
        verify_distributed(dist_models.DiesOnRankOne, _x(), world_size=2, timeout=120)
    assert time.monotonic() - start < 120


def test_a_model_failing_on_one_rank_is_its_own_error_not_a_hang(no_leftovers):
    start = time.monotonic()
    with pytest.raises(DistributedError, match=r"rank 1: the model raised ValueError without checkpointing too"):
        verify_distributed(dist_models.RaisesOnRankOne, _x(), world_size=2, timeout=120)
    assert time.monotonic() - start < 100  # the other rank is stopped after a short grace, not at the timeout


def test_bad_arguments_are_one_line_errors():
    from runtime_checks.verify import VerifyError

    with pytest.raises(VerifyError, match="wrap must be one of ddp, fsdp2"):
        verify_distributed(dist_models.BatchNormBlocks, _x(), wrap="zero3")
    with pytest.raises(VerifyError, match="smaller than world_size=8"):
        verify_distributed(dist_models.BatchNormBlocks, _x(), world_size=8)
    with pytest.raises(VerifyError, match="must pickle"):
        verify_distributed(lambda: dist_models.BatchNormBlocks(), _x())
    with pytest.raises(VerifyError, match="not an instance"):
        verify_distributed(dist_models.BatchNormBlocks(), _x())


def test_ctrl_c_in_the_caller_stops_every_rank(tmp_path):
    import signal
    import subprocess
    import sys

    script = tmp_path / "interrupted.py"
    script.write_text(
        "import torch\n"
        "from tests.distributed import dist_models\n"
        "from runtime_checks.distributed import verify_distributed\n"
        "if __name__ == '__main__':\n"
        "    verify_distributed(dist_models.SleepsInForward, torch.randn(4, 8), world_size=2, timeout=300)\n"
    )
    pids = tmp_path / "pids"
    pids.mkdir()
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, CKPT_TEST_PID_DIR=str(pids), PYTHONPATH=os.pathsep.join([str(root), *sys.path]))
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while len(list(pids.iterdir())) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
    ranks = [int(p.stem) for p in pids.iterdir()]
    assert len(ranks) == 2, "the ranks never reached their forward"
    proc.send_signal(signal.SIGINT)  # the caller only, as a supervisor or an IDE's stop button would
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    time.sleep(1)
    for pid in ranks:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_model_that_checkpoints_nothing_is_not_a_pass():
    report = verify_distributed(dist_models.plain_mlp, _x(), world_size=2, wrap="ddp")
    assert not report.equivalent
    assert "NOT CHECKPOINTED (no checkpoint region ran)" in str(report)
    assert all(r.regions == () and not r.mismatches for r in report.ranks)
