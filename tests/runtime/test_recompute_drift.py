"""Non-determinism that the first call consumes: the recompute cannot reproduce the forward.

A port of PyTorch's ``test_checkpoint_detects_non_determinism``: a counter in
a closure (state verify cannot rewind) makes the first call of the
checkpointed function differ from every later one, so the first training
step's backward recomputes other values than its forward used.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

torch = pytest.importorskip("torch")

from runtime_checks import verify  # noqa: E402


def save_2_tensors(x: torch.Tensor) -> torch.Tensor:
    return x.sin().exp()


def save_2_tensors_alt(x: torch.Tensor) -> torch.Tensor:
    return x.sin() * torch.tensor([1.0, 2.0])


def save_2_tensors_same_shape(x: torch.Tensor) -> torch.Tensor:
    return x.sin().exp() * 1.5


def get_non_det_fn(orig_fn: Callable[..., torch.Tensor], recompute_fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    counter = [0]

    def fn(x: torch.Tensor) -> torch.Tensor:
        if counter[0] == 0:
            counter[0] += 1
            return orig_fn(x)
        return recompute_fn(x)

    return fn


class Wrap(torch.nn.Module):
    def __init__(self, fn: Callable[..., torch.Tensor], use_reentrant: bool, regions: int = 1) -> None:
        super().__init__()
        self.fn, self.use_reentrant, self.regions = fn, use_reentrant, regions
        self.lin = torch.nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.utils.checkpoint.checkpoint(self.fn, self.lin(x), use_reentrant=self.use_reentrant)
        for _ in range(self.regions - 1):
            h = torch.utils.checkpoint.checkpoint(torch.tanh, h, use_reentrant=self.use_reentrant)
        return h


@pytest.mark.parametrize("use_reentrant", [False, True], ids=["nonreentrant", "reentrant"])
@pytest.mark.parametrize("alt", [save_2_tensors_alt, save_2_tensors_same_shape], ids=["other-shape", "same-shape"])
def test_first_call_non_determinism_is_reported(alt: Callable[..., torch.Tensor], use_reentrant: bool) -> None:
    model = Wrap(get_non_det_fn(save_2_tensors, alt), use_reentrant, regions=2)
    report = verify(model, torch.randn(1, 2))
    assert not report.equivalent, str(report)
    drift = [m for m in report.mismatches if m.kind == "recompute"]
    # Named once, the drifting region only: the tanh after it sees other inputs, not other behaviour.
    assert len(drift) == 1 and drift[0].region == drift[0].name, str(report)
    assert drift[0].name.endswith("get_non_det_fn.<locals>.fn")

@pytest.mark.parametrize("use_reentrant", [False, True], ids=["nonreentrant", "reentrant"])
def test_deterministic_region_called_twice_per_step_is_equivalent(use_reentrant: bool) -> None:
    """A region invoked several times in one forward (shared block) is matched call by call: no false alarm."""

    class Shared(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for _ in range(3):
                x = torch.utils.checkpoint.checkpoint(self.block, x, use_reentrant=use_reentrant)
            return x

    report = verify(Shared(), torch.randn(2, 4, requires_grad=True))
    assert report.equivalent, str(report)
