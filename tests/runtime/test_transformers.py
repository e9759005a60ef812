"""Real transformers models with gradient_checkpointing_enable(): equivalent, and regions named by module path."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from runtime_checks import verify  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:.*gradient_checkpointing_enable.*:FutureWarning")]


def _gpt2(**kw: object) -> torch.nn.Module:
    cfg = transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=16, bos_token_id=0, eos_token_id=0, **kw
    )
    return transformers.GPT2LMHeadModel(cfg)


def _llama() -> torch.nn.Module:
    cfg = transformers.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=100,
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=0,
    )
    return transformers.LlamaForCausalLM(cfg)


def _ids() -> torch.Tensor:
    return torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("use_reentrant", [None, False, True], ids=["default", "nonreentrant", "reentrant"])
@pytest.mark.parametrize("build,layers", [(_gpt2, "transformer.h"), (_llama, "model.layers")], ids=["gpt2", "llama"])
def test_zoo_model_equivalent(build, layers: str, use_reentrant: bool | None) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = build()
    if use_reentrant is None:
        model.gradient_checkpointing_enable()
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    model.train()  # GPT-2 has dropout 0.1: equal only because checkpoint restores the RNG
    report = verify(model, {"input_ids": _ids()})
    assert report.equivalent, str(report)
    assert report.regions == (f"{layers}.0", f"{layers}.1")
    assert report.memory.saved_bytes_checkpointed < report.memory.saved_bytes_baseline
    assert set(report.memory.per_region) == set(report.regions)


def test_gpt2_without_rng_preservation_is_caught_in_every_layer() -> None:
    torch.manual_seed(0)
    model = _gpt2()
    model.gradient_checkpointing_enable(
        gradient_checkpointing_kwargs={"use_reentrant": False, "preserve_rng_state": False}
    )
    model.train()
    report = verify(model, {"input_ids": _ids()})
    assert not report.equivalent
    regions = {m.region for m in report.mismatches}
    assert {"transformer.h.0", "transformer.h.1"} <= {r for reg in regions if reg for r in reg.split(", ")}
    assert any(m.kind == "rng" and m.name == "torch.cpu" for m in report.mismatches)
    # In eval mode transformers does not checkpoint at all: not a pass, unless allowed.
    model.eval()
    assert not verify(model, {"input_ids": _ids()}).equivalent
    assert verify(model, {"input_ids": _ids()}, allow_no_checkpoint=True).equivalent
