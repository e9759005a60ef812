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
        # Every attribute (name and object) and every hook of every module, with their counts.
        "attr_objects": {n: {k: id(v) for k, v in vars(m).items()} for n, m in model.named_modules()},
        "hooks": {
            (n, h): [(k, id(fn)) for k, fn in getattr(m, h).items()]
            for n, m in model.named_modules()
            for h in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
        },
        "global_hooks": [
            (k, list(v.items()))
            for k, v in vars(torch.nn.modules.module).items()
            if k.startswith("_global_") and "hook" in k and isinstance(v, dict)
        ],
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

    import os

    # This process's files only: other processes (parallel test runs) share the folder.
    assert not glob.glob(f"{tempfile.gettempdir()}/ckptlint-params-{os.getpid()}-*")
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


def test_hooks_installed_lazily_during_a_run_are_removed_between_runs() -> None:
    """A model that registers hooks on its first call (as transformers does) gets them once per run, never stacked."""

    class LazyHooks(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(2))
            self.recorded: list[torch.Tensor] = []

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            if not getattr(self, "_hooked", False):
                for b in self.blocks:
                    b.register_forward_hook(lambda mod, args, out: self.recorded.append(out))
                    b.register_full_backward_hook(lambda mod, gin, gout: None)
                torch.nn.modules.module.register_module_forward_pre_hook(lambda mod, args: None)
                self._hooked = True
            self.recorded.clear()
            for b in self.blocks:
                x = torch.utils.checkpoint.checkpoint(b, x, use_reentrant=False)
            return tuple(self.recorded)

    model, x = LazyHooks(), torch.randn(2, 4)
    before = _capture(model)
    report = verify(model, x)
    assert report.equivalent, str(report)
    _assert_same(before, _capture(model))
    assert not hasattr(model, "_hooked")


def test_model_failing_without_checkpointing_raises_its_in_place_error() -> None:
    """Counting saved tensors must not switch off autograd's in-place check in the baseline."""

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)

        def forward(self, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
            y = torch.sigmoid(self.lin(x))  # sigmoid saves its output for backward
            state.copy_(y.detach())
            y.mul_(state)  # the saved output modified in place: autograd refuses backward
            return y

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = Block()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.utils.checkpoint.checkpoint(self.block, x, torch.zeros(2, 4), use_reentrant=False)

    x = torch.randn(2, 4)
    model = Net()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        with bypass.bypass_checkpointing():
            model(x).sum().backward()
    model.zero_grad(set_to_none=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        verify(model, x)


@pytest.mark.parametrize("use_reentrant", [False, True], ids=["nonreentrant", "reentrant"])
def test_a_real_1e_3_relative_gradient_error_still_fails(use_reentrant: bool) -> None:
    """The round-off allowance (a tensor's error against its own largest value) lets no real error through."""

    class Scaled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(16, 16)
            self.calls = 0

        def block(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1  # the recompute is the second call: 1e-3 off
            return self.lin(x * (1.0 + 1e-3 * (self.calls > 1)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.utils.checkpoint.checkpoint(self.block, x, use_reentrant=use_reentrant).tanh()

    report = verify(Scaled(), torch.randn(8, 16, requires_grad=True))
    assert not report.equivalent
    grads = {m.name: m for m in report.mismatches if m.kind == "grad"}
    assert "lin.weight" in grads, str(report)
    assert 9e-4 < grads["lin.weight"].max_rel_err < 1.1e-3, str(report)


def test_round_off_rule_is_relative_to_the_tensor_scale() -> None:
    from runtime_checks.verify import _Tolerance, _within, _within_magnitude

    tol = _Tolerance(None, None, {}, regions=8)
    mrtol = tol.for_magnitude(torch.float32)
    assert mrtol is not None and 5e-6 < mrtol < 6e-6  # 16 * eps * sqrt(9)
    b = torch.tensor([1.0, 1e-6, -2.0])
    a = b + torch.tensor([0.0, 2e-6, 0.0])  # round-off of the large terms landing on a tiny element
    assert not _within(a, b, 1.3e-6, 0.0) and _within_magnitude(a, b, mrtol, 0.0)
    assert not _within_magnitude(b * (1 + 1e-3), b, mrtol, 0.0)
    assert _Tolerance(1e-6, None, {}, regions=8).for_magnitude(torch.float32) is None  # explicit: elementwise only


def test_state_notes_are_keyed_by_module_path() -> None:
    """Ten modules with a ``counter`` each: every one is named by its path, none hides another."""

    class Counting(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)
            self.counter = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.counter += 1  # written, never read: harmless, but the state ends differently
            return self.lin(x)

    class Stack(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = torch.nn.ModuleList(Counting() for _ in range(10))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for b in self.blocks:
                x = torch.utils.checkpoint.checkpoint(b, x, use_reentrant=False)
            return x

    model = Stack()
    model.blocks[3].counter = 7  # a different starting value in one of them
    report = verify(model, torch.randn(2, 4), localize=False)
    assert report.equivalent, str(report)
    text = " ".join(report.notes)
    for i in range(10):
        start = 7 if i == 3 else 0
        assert f"blocks.{i}.counter = {start + 2}, baseline {start + 1}" in text, text
    assert all(b.counter == (7 if i == 3 else 0) for i, b in enumerate(model.blocks))


def test_memory_counts_the_rng_states_checkpoint_keeps_and_says_no_saving() -> None:
    """A tiny model: checkpointing keeps more (inputs + 5 KiB of RNG state per region) than it frees."""

    class Tiny(torch.nn.Module):
        def __init__(self, preserve: bool) -> None:
            super().__init__()
            self.blocks = torch.nn.ModuleList(torch.nn.Linear(2, 2) for _ in range(3))
            self.preserve = preserve

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for b in self.blocks:
                x = torch.utils.checkpoint.checkpoint(b, x, use_reentrant=False, preserve_rng_state=self.preserve)
            return x

    report = verify(Tiny(True), torch.randn(1, 2))
    state = torch.get_rng_state().numel()
    assert report.memory.rng_state_bytes == 3 * state
    assert report.memory.saved_bytes_checkpointed >= 3 * state
    assert report.memory.saved_bytes_saved <= 0
    assert "no saving" in str(report) and "saves -" not in str(report)
    assert verify(Tiny(False), torch.randn(1, 2)).memory.rng_state_bytes == 0
    d = report.to_dict()
    assert d["memory"]["rng_state_bytes"] == 3 * state and d["memory"]["saved_bytes_saved"] == report.memory.saved_bytes_saved


def test_memory_counts_the_region_input_non_reentrant_checkpoint_keeps() -> None:
    """Once overstated by the region's input: checkpointing keeps ``h`` alive for the recompute."""

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pre = torch.nn.Linear(64, 64)
            self.region = torch.nn.Sequential(
                torch.nn.Linear(64, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.pre(x)
            return torch.utils.checkpoint.checkpoint(self.region, h, use_reentrant=False, preserve_rng_state=False)

    memory = verify(Model(), torch.randn(32, 64)).memory
    unit = 32 * 64 * 4  # one float32 [32, 64] activation
    # Without checkpointing: x (saved by pre), h, and the two tanh outputs (each storage once).
    assert memory.saved_bytes_baseline == 4 * unit
    # With it: x, and the region's input h that checkpoint holds; not 1 unit (x alone), as once counted.
    assert memory.saved_bytes_checkpointed == 2 * unit
    assert memory.saved_bytes_saved == 2 * unit


def test_memory_is_counted_through_offloading_hooks_around_checkpoint() -> None:
    """transformers' ``offload=True`` wraps each checkpoint call in ``save_on_cpu``: the figures must not read 0."""

    class Offloaded(torch.nn.Module):
        def __init__(self, offload: bool) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.blocks = torch.nn.ModuleList(
                torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU(), torch.nn.Linear(64, 64)) for _ in range(3)
            )
            self.offload = offload

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for b in self.blocks:
                if self.offload:
                    with torch.autograd.graph.save_on_cpu(pin_memory=False):
                        x = torch.utils.checkpoint.checkpoint(b, x, use_reentrant=False)
                else:
                    x = torch.utils.checkpoint.checkpoint(b, x, use_reentrant=False)
            return x

    x = torch.randn(32, 64)
    plain, offloaded = verify(Offloaded(False), x).memory, verify(Offloaded(True), x).memory
    assert offloaded.saved_bytes_baseline == plain.saved_bytes_baseline > 0
    assert offloaded.per_region == plain.per_region and all(v > 0 for v in plain.per_region.values())
    assert offloaded.saved_bytes_checkpointed == plain.saved_bytes_checkpointed
    assert 0 < offloaded.saved_bytes_saved < offloaded.saved_bytes_baseline
