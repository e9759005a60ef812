"""Frozen inputs under reentrant checkpoint: harmless (nothing trainable inside) or fatal (names what loses its gradient)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from runtime_checks import verify  # noqa: E402
from runtime_checks.advice import advise  # noqa: E402
from tests.runtime.models import RawInputNet, make_input  # noqa: E402
from tests.runtime.reporting import one_line  # noqa: E402
from tests.runtime.zoo import tiny_llama, token_ids  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")]


class LoRA(torch.nn.Module):
    """A LoRA-style adapter (what PEFT builds): frozen base projection plus a trainable low-rank update."""

    def __init__(self, base: torch.nn.Linear, r: int = 4) -> None:
        super().__init__()
        self.base = base
        self.lora_A = torch.nn.Linear(base.in_features, r, bias=False)
        self.lora_B = torch.nn.Linear(r, base.out_features, bias=False)
        torch.nn.init.normal_(self.lora_B.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.lora_B(self.lora_A(x))




def _reentrant(model: torch.nn.Module) -> torch.nn.Module:
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    # transformers >= 5 makes the embeddings' output require grad itself;
    # transformers 4.x (and any model without that hook) does not.
    model.disable_input_require_grads()
    return model.train()


def test_lora_on_frozen_llama_with_reentrant_checkpoint_is_fatal() -> None:
    model = tiny_llama()
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in model.model.layers:
        layer.self_attn.q_proj = LoRA(layer.self_attn.q_proj)
        layer.self_attn.v_proj = LoRA(layer.self_attn.v_proj)
    report = verify(_reentrant(model), token_ids())
    assert not report.equivalent
    lost = {m.name for m in report.mismatches if m.kind == "missing_grad"}
    assert lost == {
        f"model.layers.{i}.self_attn.{proj}.lora_{ab}.weight"
        for i in (0, 1) for proj in ("q_proj", "v_proj") for ab in "AB"
    }
    # Each parameter is blamed on the region that holds it, without a localisation run.
    assert {m.name.split(".self_attn")[0] for m in report.mismatches} == {m.region for m in report.mismatches}
    assert [c.recomputes for c in report.census] == [0, 0]
    causes = [a.cause for a in advise(report)]
    assert causes[0] == "frozen-inputs"
    text = one_line(report)
    assert "None of the inputs have requires_grad=True" in text
    assert "8 parameters get no gradient" in text and "enable_input_require_grads()" in text
    # The fix the advice names works.
    model.enable_input_require_grads()
    assert verify(model, token_ids()).equivalent


def test_frozen_base_with_nothing_trainable_inside_regions_is_harmless() -> None:
    model = tiny_llama()
    for p in model.model.parameters():  # only lm_head (outside every region) trains
        p.requires_grad_(False)
    report = verify(_reentrant(model), token_ids())
    assert report.equivalent, str(report)
    assert [a.cause for a in advise(report)] == ["frozen-inputs-harmless"]
    assert "harmless here" in one_line(report)


def test_raw_input_without_grad_small_model() -> None:
    report = verify(RawInputNet(use_reentrant=True), make_input())
    assert "frozen-inputs" in [a.cause for a in advise(report)]


def test_strategy_regime_finds_the_frozen_input_case() -> None:
    from runtime_checks import check_checkpoint_equivalence, tensors
    from runtime_checks.assertions import CheckpointMismatchError

    strategy = tensors(shape=("B", 16), requires_grad="either", dims={"B": (2, 4)})
    with pytest.raises(CheckpointMismatchError) as info:
        check_checkpoint_equivalence(
            RawInputNet(use_reentrant=True), strategy.map(lambda t: (t,)), max_examples=20, hypothesis_seed=0
        )
    assert "+grad" not in info.value.inputs  # the failing regime: the input does not require grad
    assert "frozen-inputs" in [a.cause for a in advise(info.value.report)]
    # Non-reentrant checkpoint is right in both regimes.
    check_checkpoint_equivalence(RawInputNet(use_reentrant=False), strategy.map(lambda t: (t,)), max_examples=6)


def test_either_requires_a_floating_dtype() -> None:
    from runtime_checks import tensors

    with pytest.raises(ValueError, match="floating dtype"):
        tensors(shape=(2,), dtype=torch.int64, requires_grad="either")
    with pytest.raises(ValueError, match="True, False or 'either'"):
        tensors(shape=(2,), requires_grad="sometimes")  # type: ignore[arg-type]
