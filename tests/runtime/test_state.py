"""verify leaves no trace: every parameter, buffer, grad, flag and RNG stream bit for bit."""

from __future__ import annotations

import random
from typing import Any

import pytest

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")

from runtime_checks import bypass, verify  # noqa: E402
from tests.runtime import models  # noqa: E402
from tests.runtime.models import BombNet, Net, make_input  # noqa: E402


def _capture(model: torch.nn.Module) -> dict[str, Any]:
    return {
        "param_objects": [(n, id(p), p.data_ptr()) for n, p in model.named_parameters()],
        "params": {n: p.detach().clone() for n, p in model.named_parameters()},
        "dtypes": {n: (p.dtype, p.device) for n, p in model.named_parameters()},
        "grad_objects": {n: id(p.grad) for n, p in model.named_parameters()},
        "grads": {n: (None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "buffer_objects": {n: id(b) for n, b in model.named_buffers()},
        "buffers": {n: b.clone() for n, b in model.named_buffers()},
        "training": {n: m.training for n, m in model.named_modules()},
        "attrs": {n: {k: v for k, v in vars(m).items() if isinstance(v, (int, float, str))} for n, m in model.named_modules()},
        "torch_rng": torch.get_rng_state(),
        "initial_seed": torch.initial_seed(),
        "python_rng": random.getstate(),
        "numpy_rng": np.random.get_state(),
        "generators": {n: m.gen.get_state() for n, m in model.named_modules() if hasattr(m, "gen")},
        "globals": (list(models.SEEN), dict(models.CONFIG)),
        "patched": bypass.installed(),
        "checkpoint_code": torch.utils.checkpoint.checkpoint.__wrapped__.__code__
        if hasattr(torch.utils.checkpoint.checkpoint, "__wrapped__")
        else torch.utils.checkpoint.checkpoint.__code__,
    }


def _assert_same(before: dict[str, Any], after: dict[str, Any]) -> None:
    for key in before:
        a, b = before[key], after[key]
        if key in ("params", "buffers", "grads", "generators"):
            assert a.keys() == b.keys(), key
            for n in a:
                if a[n] is None:
                    assert b[n] is None, (key, n)
                else:
                    assert a[n].dtype == b[n].dtype and torch.equal(a[n], b[n]), (key, n)
        elif key in ("torch_rng",):
            assert torch.equal(a, b), key
        elif key == "numpy_rng":
            assert a[0] == b[0] and np.array_equal(a[1], b[1]) and a[2:] == b[2:], key
        else:
            assert a == b, key


def _prepare(model: torch.nn.Module) -> torch.nn.Module:
    """Existing grads (one param without), a frozen param, a submodule in eval: all must survive."""
    for i, (_, p) in enumerate(model.named_parameters()):
        if i % 3 == 0:
            p.grad = torch.full_like(p, 0.25 * i)
    model.blocks[2].l2.bias.requires_grad_(False)
    model.blocks[0].eval()
    torch.manual_seed(1234)
    random.seed(99)
    np.random.seed(5)
    return model


HAZARDS = ["batchnorm_train", "generator", "python_random", "numpy_random", "counter_branch", "global_list", "global_dict", "dropout_no_preserve", None]


@pytest.mark.parametrize("use_reentrant", [False, True], ids=["nonreentrant", "reentrant"])
@pytest.mark.parametrize("hazard", HAZARDS)
def test_state_restored_bitwise(hazard: str | None, use_reentrant: bool) -> None:
    model = _prepare(Net(hazard, use_reentrant=use_reentrant))
    before = _capture(model)
    x = make_input(requires_grad=True)
    x_before = x.detach().clone()
    verify(model, x, dtype=torch.float64 if hazard is None else None)
    _assert_same(before, _capture(model))
    assert torch.equal(x, x_before) and x.grad is None


def test_state_restored_when_model_raises_in_backward() -> None:
    model = _prepare(BombNet("batchnorm_train"))
    before = _capture(model)
    with pytest.raises(RuntimeError, match="boom in backward"):
        verify(model, make_input())
    _assert_same(before, _capture(model))


def test_state_restored_when_only_checkpointed_run_raises() -> None:
    model = _prepare(Net("inplace_input", use_reentrant=True))
    before = _capture(model)
    report = verify(model, make_input())
    assert [m.kind for m in report.mismatches] == ["error"]
    assert "in-place" in report.mismatches[0].detail
    _assert_same(before, _capture(model))


def test_baseline_error_is_reraised_not_reported() -> None:
    class Broken(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise KeyError("model bug")

    with pytest.raises(KeyError, match="model bug"):
        verify(Broken(), make_input())
    assert not bypass.installed()


def test_in_place_write_to_a_parameter_is_undone() -> None:
    class Drifting(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                self.lin.weight.mul_(0.5)  # e.g. a weight-normalising hack
            return self.lin(x)

    class DataWriter(Drifting):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.lin.weight.data.mul_(0.5)  # .data: no version counter bump
            return self.lin(x)

    # Default ("disk": a temporary file, read back for written parameters) and an in-memory copy.
    for cls in (Drifting, DataWriter):
        for mode in ("disk", True):
            model, x = cls(), torch.randn(2, 4)
            before = _capture(model)
            report = verify(model, x, snapshot_params=mode, allow_no_checkpoint=True)
            assert report.equivalent, (cls.__name__, mode)  # every run starts from the same weights
            _assert_same(before, _capture(model))
    # The default leaves no temporary file behind.
    import glob
    import tempfile

    assert not glob.glob(f"{tempfile.gettempdir()}/ckptlint-params-*")
    # Keeping nothing: the write is detected and named.
    from runtime_checks import ParameterWriteError, VerifyError

    with pytest.raises(ParameterWriteError, match="lin.weight"):
        verify(Drifting(), torch.randn(2, 4), snapshot_params=False)
    with pytest.raises(ParameterWriteError, match="lin.weight"):
        verify(DataWriter(), torch.randn(2, 4), snapshot_params=False)
    assert not bypass.installed()
    with pytest.raises(VerifyError, match="snapshot_params"):
        verify(Drifting(), torch.randn(2, 4), snapshot_params="memory")


def test_noise_floor_widens_tolerance() -> None:
    import itertools

    calls = itertools.count()  # an iterator: state the snapshot cannot rewind

    class Noisy(torch.nn.Module):
        """Output drifts by 1e-4 per call (like nondeterministic GPU kernels, but reproducibly)."""

        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x) + next(calls) * 1e-4

    report = verify(Noisy(), torch.randn(2, 4), allow_no_checkpoint=True)
    assert report.equivalent, str(report)
    assert "output" in report.noisy
    # Without the noise floor the same jitter is a mismatch.
    from runtime_checks.verify import _within

    assert not _within(torch.zeros(3) + 1e-4, torch.zeros(3), 1.3e-6, 1e-5)


def test_bad_arguments_raise_verify_error() -> None:
    from runtime_checks import VerifyError

    with pytest.raises(VerifyError, match="inputs must be"):
        verify(Net(), object())
    with pytest.raises(VerifyError, match="no submodule"):
        verify(Net(), make_input(), checkpoint=["nope"])
    with pytest.raises(VerifyError, match="factory"):
        verify(lambda: 3, make_input())
    with pytest.raises(VerifyError, match="scalar"):
        verify(Net(), make_input(), loss_fn=lambda out: out)
    assert not bypass.installed()
