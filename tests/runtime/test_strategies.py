"""Hypothesis strategies: shared symbolic dims, shrinking to a minimal failing input, plain @given use."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from runtime_checks import (  # noqa: E402
    assert_checkpoint_equivalent,
    check_checkpoint_equivalence,
    inputs,
    tensors,
    verify,
)
from runtime_checks.assertions import CheckpointMismatchError  # noqa: E402
from runtime_checks.strategies import parse_input_spec  # noqa: E402
from tests.runtime.models import WIDTH, Net, make_input  # noqa: E402


@settings(max_examples=25, deadline=None)
@given(
    args=inputs(
        tensors(shape=("B", "T", 4), dims={"B": (1, 3), "T": (2, 5)}),
        tensors(shape=("B", "T"), dtype=torch.int64, elements=(0, 10), dims={"B": (1, 3), "T": (2, 5)}),
        tensors(shape=("B",), requires_grad=True, dims={"B": (1, 3)}),
    )
)
def test_named_dims_are_shared_within_an_example(args: tuple[torch.Tensor, ...]) -> None:
    x, ids, w = args
    b, t, four = x.shape
    assert four == 4 and 1 <= b <= 3 and 2 <= t <= 5
    assert ids.shape == (b, t) and ids.dtype == torch.int64 and 0 <= int(ids.min()) and int(ids.max()) < 10
    assert w.shape == (b,) and w.requires_grad and x.dtype == torch.float32


@settings(max_examples=10, deadline=None)
@given(kw=inputs(x=tensors(shape=("B", 3), elements=st.floats(-2, 2, width=32)), flag=True))
def test_keyword_inputs_and_elementwise_strategy(kw: dict[str, object]) -> None:
    x = kw["x"]
    assert isinstance(x, torch.Tensor) and x.shape[1] == 3 and kw["flag"] is True
    assert float(x.abs().max()) <= 2.0 if x.numel() else True


@settings(max_examples=5, deadline=None)
@given(x=tensors(shape=("B", WIDTH), requires_grad=True))
def test_given_with_assert_helper(x: torch.Tensor) -> None:
    assert_checkpoint_equivalent(Net(), x)


def test_assert_helper_raises_with_report() -> None:
    with pytest.raises(AssertionError, match="NOT EQUIVALENT"):
        assert_checkpoint_equivalent(Net("global_dict"), make_input())


class OnlyLargeBatches(torch.nn.Module):
    """Checkpointing breaks only for batches of 3 or more (a shape-dependent hazard)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(WIDTH, WIDTH)
        self.b = torch.nn.Linear(WIDTH, WIDTH)
        self.calls = 0

    def block(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        h = self.a(x)
        if x.shape[0] >= 3 and self.calls % 2 == 0:
            h = torch.sigmoid(h)
        return self.b(torch.tanh(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.utils.checkpoint.checkpoint(self.block, x, use_reentrant=False)


def test_check_shrinks_to_the_smallest_failing_input() -> None:
    with pytest.raises(CheckpointMismatchError) as info:
        check_checkpoint_equivalence(
            OnlyLargeBatches, tensors(shape=("B", WIDTH), dims={"B": (1, 8)}), max_examples=30, hypothesis_seed=0
        )
    err = info.value
    assert err.inputs == f"float32[3, {WIDTH}]"  # shrunk to the boundary
    assert err.hypothesis_seed == 0 and "hypothesis_seed=0" in str(err)
    # A method of the root module: "<class>:<method>".
    assert {m.region for m in err.report.mismatches} == {"OnlyLargeBatches:block"}


def test_check_passes_on_clean_model() -> None:
    seen: list[bool] = []
    check_checkpoint_equivalence(
        Net, inputs(tensors(shape=("B", WIDTH))), max_examples=4, on_example=lambda i, r: seen.append(r.equivalent)
    )
    assert seen and all(seen)


@pytest.mark.parametrize(
    "spec,name,shape_names",
    [
        ("float32[B,16]", None, None),
        ("x = float64[2, T, 8]+grad", "x", None),
        ("ids=int64[B,T]:0:1000", "ids", None),
    ],
)
def test_parse_input_spec(spec: str, name: str | None, shape_names: object) -> None:
    got_name, strategy = parse_input_spec(spec)
    assert got_name == name
    from hypothesis import find

    value = find(strategy, lambda t: True)
    assert isinstance(value, torch.Tensor)
    assert value.requires_grad == spec.endswith("+grad")


@pytest.mark.parametrize("spec", ["float32", "float32[B,16", "complex7[B]", "float32[-1]", "int64[B]+grad"])
def test_parse_input_spec_rejects(spec: str) -> None:
    with pytest.raises(ValueError, match="bad --input"):
        parse_input_spec(spec)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), reentrant=st.booleans())
def test_verdict_does_not_depend_on_the_seed(seed: int, reentrant: bool) -> None:
    assert verify(Net(use_reentrant=reentrant), make_input(), seed=seed).equivalent
    assert not verify(Net("generator", use_reentrant=reentrant), make_input(), seed=seed, localize=False).equivalent
