"""verify(..., autocast="bf16"): both runs under CPU autocast, compared with bfloat16 tolerances."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from runtime_checks import VerifyError, verify  # noqa: E402
from tests.runtime.models import Net, make_input  # noqa: E402
from tests.runtime.zoo import tiny_llama, token_ids  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")]


@pytest.mark.parametrize("use_reentrant", [False, True], ids=["nonreentrant", "reentrant"])
def test_llama_under_bf16_autocast_is_equivalent(use_reentrant: bool) -> None:
    model = tiny_llama()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    model.train()
    def bf16_only(_m: torch.nn.Module, _args: object, out: torch.Tensor) -> None:
        # verify restores every container a hook can reach, so the hook checks instead of recording.
        if out.dtype != torch.bfloat16:
            raise TypeError(f"autocast not active: {out.dtype}")

    handle = model.model.layers[0].mlp.down_proj.register_forward_hook(bf16_only)
    ids = token_ids()
    try:
        report = verify(model, ids, autocast="bf16")
        assert report.equivalent, str(report)
        with pytest.raises(TypeError, match="autocast not active"):  # the model's own error, re-raised
            verify(model, ids)
    finally:
        handle.remove()


def test_hazard_still_caught_under_autocast() -> None:
    report = verify(Net("counter_branch"), make_input(), autocast=torch.bfloat16)
    assert not report.equivalent
    assert {m.region for m in report.mismatches} == {"blocks.1"}


def test_bad_autocast_value() -> None:
    with pytest.raises(VerifyError, match="autocast must be"):
        verify(Net(), make_input(), autocast="int8")


def test_fp16_autocast_runs_in_float16_and_is_equivalent() -> None:
    model = tiny_llama()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()

    def fp16_only(_m: torch.nn.Module, _args: object, out: torch.Tensor) -> None:
        if out.dtype != torch.float16:
            raise TypeError(f"fp16 autocast not active: {out.dtype}")

    handle = model.model.layers[0].mlp.down_proj.register_forward_hook(fp16_only)
    try:
        report = verify(model, token_ids(), autocast="fp16")
        assert report.equivalent, str(report)
    finally:
        handle.remove()
