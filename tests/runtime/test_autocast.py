"""verify(..., autocast="bf16"|"fp16"): both runs under CPU autocast, compared with that dtype's tolerances."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from runtime_checks import VerifyError, verify  # noqa: E402
from tests.runtime.models import Net, make_input  # noqa: E402
from tests.runtime.zoo import tiny_llama, token_ids  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")]


@pytest.mark.parametrize(
    ("autocast", "dtype", "use_reentrant"),
    [("bf16", torch.bfloat16, False), ("bf16", torch.bfloat16, True), ("fp16", torch.float16, False)],
    ids=["bf16-nonreentrant", "bf16-reentrant", "fp16-nonreentrant"],
)
def test_llama_under_autocast_is_equivalent(autocast: str, dtype: torch.dtype, use_reentrant: bool) -> None:
    model = tiny_llama()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    model.train()
    def autocast_only(_m: torch.nn.Module, _args: object, out: torch.Tensor) -> None:
        # verify restores every container a hook can reach, so the hook checks instead of recording.
        if out.dtype != dtype:
            raise TypeError(f"autocast not active: {out.dtype}")

    handle = model.model.layers[0].mlp.down_proj.register_forward_hook(autocast_only)
    ids = token_ids()
    try:
        report = verify(model, ids, autocast=autocast)
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

