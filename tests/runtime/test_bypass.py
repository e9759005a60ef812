"""Every route to checkpointing is bypassed (and named), on whichever torch is installed.

Run under torch 2.13 (.venv) and torch 2.14.1 (.venv214, which also has timm):
the two releases differ in checkpoint's private internals and 2.14 adds the
decorator form.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest

torch = pytest.importorskip("torch")
import torch.nn as nn  # noqa: E402
import torch.utils.checkpoint as cp  # noqa: E402
from torch.utils.checkpoint import checkpoint as ckpt_alias  # noqa: E402
from torch.utils.checkpoint import checkpoint_sequential  # noqa: E402

from runtime_checks import bypass, bypass_checkpointing, verify  # noqa: E402


class Counted(nn.Module):
    """Counts forward calls: 2 per step under checkpoint (forward + recompute), 1 when bypassed."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.tanh(self.lin(x))


class Route(nn.Module):
    def __init__(self, call: Callable[[Route, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.inp = nn.Linear(8, 8)
        self.blocks = nn.ModuleList([Counted(), Counted()])
        self.call = call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.call(self, self.inp(x))


def _module_attribute(m: Route, x: torch.Tensor) -> torch.Tensor:
    for b in m.blocks:
        x = torch.utils.checkpoint.checkpoint(b, x, use_reentrant=False)
    return x


def _alias_reentrant(m: Route, x: torch.Tensor) -> torch.Tensor:
    for b in m.blocks:
        x = ckpt_alias(b, x, use_reentrant=True)
    return x


def _module_alias_bound_method(m: Route, x: torch.Tensor) -> torch.Tensor:
    for b in m.blocks:
        x = cp.checkpoint(b.forward, x, use_reentrant=False)
    return x


_PARTIAL = functools.partial(ckpt_alias, use_reentrant=False)


def _stored_partial(m: Route, x: torch.Tensor) -> torch.Tensor:
    # transformers/diffusers: self._gradient_checkpointing_func = partial(checkpoint, **kwargs)
    for b in m.blocks:
        x = _PARTIAL(functools.partial(b.__call__), x)
    return x


def _make_custom_forward(module: nn.Module) -> Callable[..., torch.Tensor]:
    def custom_forward(*inputs: torch.Tensor) -> torch.Tensor:
        return module(*inputs)

    return custom_forward


def _closure(m: Route, x: torch.Tensor) -> torch.Tensor:
    # The pre-GradientCheckpointingLayer transformers idiom.
    for b in m.blocks:
        x = ckpt_alias(_make_custom_forward(b), x, use_reentrant=False)
    return x


def _late_binding_closure(m: Route, x: torch.Tensor) -> torch.Tensor:
    for b in m.blocks:

        def run(*inputs: torch.Tensor) -> torch.Tensor:
            return b(*inputs)  # noqa: B023 - the bug under test: 'b' is read at recompute time

        x = ckpt_alias(run, x, use_reentrant=False)
    return x


def _sequential(m: Route, x: torch.Tensor) -> torch.Tensor:
    return checkpoint_sequential(list(m.blocks) + [nn.Identity()], 2, x, use_reentrant=False)


ROUTES = {
    "module_attribute": (_module_attribute, ("blocks.0", "blocks.1")),
    "from_import_alias_reentrant": (_alias_reentrant, ("blocks.0", "blocks.1")),
    "bound_method": (_module_alias_bound_method, ("blocks.0", "blocks.1")),
    "stored_partial": (_stored_partial, ("blocks.0", "blocks.1")),
    "closure": (_closure, ("blocks.0", "blocks.1")),
    "checkpoint_sequential": (_sequential, ("blocks.0",)),
}


def _step(model: nn.Module) -> None:
    x = torch.randn(3, 8)
    model(x).sum().backward()


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_route_bypassed_and_restored(route: str) -> None:
    call, regions = ROUTES[route]
    model = Route(call)
    _step(model)
    checkpointed = [b.calls for b in model.blocks]
    for b in model.blocks:
        b.calls = 0
    with bypass_checkpointing(model) as seen:
        assert bypass.installed()
        _step(model)
    assert [b.calls for b in model.blocks] == [1, 1]  # called directly, never recomputed
    assert tuple(seen) == regions
    assert not bypass.installed()
    for b in model.blocks:
        b.calls = 0
    _step(model)
    assert [b.calls for b in model.blocks] == checkpointed  # checkpointing is back
    assert sum(checkpointed) > 2


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_route_verified_and_named(route: str) -> None:
    call, regions = ROUTES[route]
    report = verify(Route(call), torch.randn(3, 8))
    assert report.equivalent, str(report)
    assert report.regions == regions


def test_late_binding_closure_is_caught() -> None:
    # The recompute of the first region calls whatever 'b' is by then: the last block.
    report = verify(Route(_late_binding_closure), torch.randn(3, 8))
    assert not report.equivalent
    assert report.regions == ("blocks.0", "blocks.1")
    assert {m.region for m in report.mismatches} == {"blocks.0"}
    assert any(m.name == "blocks.0.lin.weight" for m in report.mismatches)


def test_bypass_undone_when_block_raises() -> None:
    code = (ckpt_alias.__wrapped__ if hasattr(ckpt_alias, "__wrapped__") else ckpt_alias).__code__
    with pytest.raises(ZeroDivisionError):
        with bypass_checkpointing():
            1 / 0
    assert not bypass.installed()
    assert (ckpt_alias.__wrapped__ if hasattr(ckpt_alias, "__wrapped__") else ckpt_alias).__code__ is code


def test_checkpoint_wrapper_from_apply_activation_checkpointing() -> None:
    wrapper_mod = pytest.importorskip("torch.distributed.algorithms._checkpoint.checkpoint_wrapper")
    for impl in (wrapper_mod.CheckpointImpl.NO_REENTRANT, wrapper_mod.CheckpointImpl.REENTRANT):
        model = Route(lambda m, x: m.blocks[1](m.blocks[0](x)))
        wrapper_mod.apply_activation_checkpointing(
            model,
            checkpoint_wrapper_fn=functools.partial(wrapper_mod.checkpoint_wrapper, checkpoint_impl=impl),
            check_fn=lambda mod: isinstance(mod, Counted),
        )
        report = verify(model, torch.randn(3, 8, requires_grad=True))
        assert report.equivalent, str(report)
        assert report.regions == ("blocks.0", "blocks.1")  # wrapper's inner module path, tidied
        counted = [m for m in model.modules() if isinstance(m, Counted)]
        with bypass_checkpointing(model):
            _step(model)
        assert [c.calls for c in counted] == [1, 1]


def test_decorator_form_torch_2_14() -> None:
    try:
        decorator = torch.utils.checkpoint.checkpoint(use_reentrant=False)
    except TypeError:
        pytest.skip(f"torch {torch.__version__} has no decorator form of checkpoint")

    class Decorated(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList([Counted(), Counted()])

        @torch.utils.checkpoint.checkpoint(use_reentrant=False)
        def block0(self, x: torch.Tensor) -> torch.Tensor:
            return self.blocks[0](x)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            run = decorator(self.blocks[1])
            return run(self.block0(x))

    model = Decorated()
    report = verify(model, torch.randn(3, 8, requires_grad=True))
    assert report.equivalent, str(report)
    assert report.regions == ("Decorated:block0", "blocks.1")
    with bypass_checkpointing(model):
        _step(model)
    assert [b.calls for b in model.blocks] == [1, 1]
    _step(model)
    assert [b.calls for b in model.blocks] == [3, 3]


def test_timm_checkpoint_seq_and_wrapper() -> None:
    timm_manip = pytest.importorskip("timm.models._manipulate", exc_type=ImportError)
    model = Route(lambda m, x: timm_manip.checkpoint_seq(m.blocks, x))
    report = verify(model, torch.randn(3, 8))
    assert report.equivalent and report.regions == ("blocks.0", "blocks.1"), str(report)
    with bypass_checkpointing(model):
        _step(model)
    assert [b.calls for b in model.blocks] == [1, 1]
    model2 = Route(lambda m, x: timm_manip.checkpoint(m.blocks[1], timm_manip.checkpoint(m.blocks[0], x)))
    report = verify(model2, torch.randn(3, 8))
    assert report.equivalent and report.regions == ("blocks.0", "blocks.1"), str(report)


def test_composable_checkpoint() -> None:
    composable = pytest.importorskip("torch.distributed._composable", exc_type=ImportError).checkpoint
    model = Route(lambda m, x: m.blocks[1](m.blocks[0](x)))
    for b in model.blocks:
        composable(b)
    report = verify(model, torch.randn(3, 8))
    assert report.equivalent, str(report)
    assert report.regions == ("blocks.0", "blocks.1")
    assert set(report.memory.per_region) == {"blocks.0", "blocks.1"}
    assert all(composable.state(b).enable_hook for b in model.blocks)  # switched back on
    for b in model.blocks:
        b.calls = 0
    with bypass_checkpointing(model) as seen:
        _step(model)
    assert seen == ["blocks.0", "blocks.1"] and [b.calls for b in model.blocks] == [1, 1]
    _step(model)
    assert [b.calls for b in model.blocks] == [3, 3]  # forward + recompute again
    # A hazard inside one of them is caught and localised.
    from tests.runtime.models import Block as HazardBlock

    bad = Route(lambda m, x: m.blocks[1](m.blocks[0](x)))
    bad.blocks = nn.ModuleList([Counted(), HazardBlock("counter_branch")])
    bad.blocks[1].l1 = nn.Linear(8, 8)
    bad.blocks[1].l2 = nn.Linear(8, 8)
    for b in bad.blocks:
        composable(b)
    report = verify(bad, torch.randn(3, 8))
    assert not report.equivalent
    assert {m.region for m in report.mismatches} == {"blocks.1"}
