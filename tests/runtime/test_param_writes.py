"""Writes to parameters during the step (MoCo's momentum update): undone between runs, or reported."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from runtime_checks import ParameterWriteError, VerifyError, verify  # noqa: E402
from runtime_checks import snapshot  # noqa: E402
from tests.runtime.test_state import _assert_same, _capture  # noqa: E402


class MoCo(torch.nn.Module):
    """A query and a key encoder; the key encoder follows the query one by a momentum update in forward.

    Under checkpoint the update runs again in the recompute, so backward sees a
    key encoder updated twice: a real hazard (the gradients of the query
    encoder differ).
    """

    def __init__(self, how: str, m: float = 0.5) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.q = torch.nn.Linear(4, 4)
        self.k = torch.nn.Linear(4, 4)
        self.how, self.m = how, m

    def _step(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            for p_q, p_k in zip(self.q.parameters(), self.k.parameters()):
                if self.how == "assign":
                    p_k.data = p_k.data * self.m + p_q.data * (1.0 - self.m)
                else:
                    p_k.data.mul_(self.m).add_(p_q.data * (1.0 - self.m))
            k = self.k(x)
        return self.q(x) * k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.utils.checkpoint.checkpoint(self._step, x, use_reentrant=False)


def _spills() -> list[str]:
    return [n for n in os.listdir(tempfile.gettempdir()) if n.startswith("ckptlint-params-")]


@pytest.mark.parametrize("how", ["assign", "mul_"])
@pytest.mark.parametrize("mode", ["disk", True])
def test_data_writes_are_undone_and_the_hazard_reported(how: str, mode: object) -> None:
    model, x = MoCo(how), torch.randn(3, 4)
    before = _capture(model)
    report = verify(model, x, snapshot_params=mode)  # type: ignore[arg-type]
    assert not report.equivalent, str(report)
    assert {m.name for m in report.mismatches if m.kind == "grad"} >= {"q.weight", "q.bias"}
    assert not report.noisy  # every run started from the same weights: nothing looks like noise
    _assert_same(before, _capture(model))


@pytest.mark.parametrize("how", ["assign", "mul_"])
def test_data_write_without_a_copy_raises_parameter_write_error(how: str) -> None:
    with pytest.raises(ParameterWriteError, match=r"k\.weight"):
        verify(MoCo(how), torch.randn(3, 4), snapshot_params=False)


@pytest.mark.parametrize("how", ["assign", "mul_"])
def test_data_write_then_model_error_raises_parameter_write_error(how: str) -> None:
    class WritesThenFails(MoCo):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self._step(x)
            raise KeyError("model bug after the update")

    with pytest.raises(ParameterWriteError, match=r"k\.weight"):
        verify(WritesThenFails(how), torch.randn(3, 4), snapshot_params=False)

    class WritesInBackwardThenFails(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.k = torch.nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.k(x)

            def hook(grad: torch.Tensor) -> torch.Tensor:
                if how == "assign":
                    self.k.weight.data = self.k.weight.data * 0.5
                else:
                    self.k.weight.data.mul_(0.5)
                raise KeyError("model bug in backward")

            out.register_hook(hook)
            return out

    # The write happens in the baseline's backward, which then raises: the
    # write is what the caller hears about (the model's error is its cause).
    with pytest.raises(ParameterWriteError, match=r"k\.weight") as info:
        verify(WritesInBackwardThenFails(), torch.randn(3, 4), snapshot_params=False)
    assert isinstance(info.value.__cause__, KeyError)


def test_full_tmpdir_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(snapshot.torch, "save", full)
    model, x = MoCo("assign"), torch.randn(3, 4)
    before = _capture(model)
    with pytest.raises(VerifyError, match=r"cannot write the .* parameter snapshot .*No space left on device.*TMPDIR"):
        verify(model, x)
    _assert_same(before, _capture(model))
    assert not [n for n in _spills() if n.startswith(f"ckptlint-params-{os.getpid()}-")]


def test_tmpdir_that_is_a_file_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    monkeypatch.setattr(tempfile, "tempdir", str(not_a_dir))
    with pytest.raises(VerifyError, match="parameter snapshot"):
        verify(MoCo("assign"), torch.randn(3, 4))


def test_snapshot_file_removed_on_success_error_and_verify_error() -> None:
    mine = f"ckptlint-params-{os.getpid()}-"
    verify(MoCo("assign"), torch.randn(3, 4))

    class Fails(MoCo):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise KeyError("bug")

    with pytest.raises(KeyError):
        verify(Fails("assign"), torch.randn(3, 4))
    with pytest.raises(VerifyError):
        verify(MoCo("assign"), torch.randn(3, 4), loss_fn=lambda out: out)
    assert not [n for n in _spills() if n.startswith(mine)]


def test_stale_snapshot_of_a_killed_run_is_removed_by_the_next(tmp_path: Path) -> None:
    child = textwrap.dedent(
        """
        import os, sys, time, torch
        from runtime_checks import verify

        class Slow(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = torch.nn.Linear(4, 4)
            def forward(self, x):
                print("RUNNING", flush=True)
                time.sleep(60)
                return self.lin(x)

        verify(Slow(), torch.randn(2, 4))
        """
    )
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", child], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "RUNNING"
        left = [p.name for p in tmp_path.iterdir() if p.name.startswith("ckptlint-params-")]
        assert left and left[0].startswith(f"ckptlint-params-{proc.pid}-")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [p.name for p in tmp_path.iterdir()] == left  # SIGKILL skips every finally
    removed = snapshot.remove_stale_spills(str(tmp_path))
    assert [Path(p).name for p in removed] == left and not list(tmp_path.iterdir())
    # verify itself cleans up at its start: leave one behind again and run in this process.
    stale = tmp_path / f"ckptlint-params-{proc.pid}-abc.pt"
    stale.write_bytes(b"")
    old = tempfile.tempdir
    tempfile.tempdir = str(tmp_path)
    try:
        verify(MoCo("assign"), torch.randn(3, 4))
    finally:
        tempfile.tempdir = old
    assert not stale.exists() and not list(tmp_path.iterdir())


def test_meta_device_model_is_a_verify_error() -> None:
    with torch.device("meta"):
        model = torch.nn.Linear(4, 4)
    with pytest.raises(VerifyError, match="meta device.*materialise"):
        verify(model, torch.randn(2, 4))


@pytest.mark.parametrize("name", ["rtol", "atol"])
@pytest.mark.parametrize("value", [-1e-3, float("nan"), float("inf"), "1e-3", True])
def test_bad_tolerance_is_a_verify_error(name: str, value: object) -> None:
    with pytest.raises(VerifyError, match=f"{name} must be a non-negative finite number, got {value!r}"[:40]):
        verify(torch.nn.Linear(4, 4), torch.randn(2, 4), **{name: value})  # type: ignore[arg-type]
