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


# A tiny decoder of the Llama family (Llama, Mixtral).
_DECODER = dict(
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


def _llama() -> torch.nn.Module:
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**_DECODER))


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


# ----------------------------------------------------------------------------- leave no trace: hooks, lazy state
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _trace(model: torch.nn.Module) -> dict[str, object]:
    """Every module's hook dicts (keys, hook objects, counts) and attribute dict (names and objects)."""
    out: dict[str, object] = {}
    for name, mod in model.named_modules():
        for hooks in _HOOK_DICTS:
            d = getattr(mod, hooks)
            out[f"{name}:{hooks}"] = [(k, id(v)) for k, v in d.items()]
        out[f"{name}:vars"] = {k: id(v) for k, v in vars(mod).items()}
    out["hook_count"] = sum(len(getattr(m, h)) for m in model.modules() for h in _HOOK_DICTS)
    return out


def _mixtral() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.MixtralConfig(**_DECODER, num_local_experts=4, num_experts_per_tok=2, output_router_logits=True)
    return transformers.MixtralForCausalLM(cfg)


@pytest.mark.parametrize("called_before", [False, True], ids=["fresh", "called-before"])
def test_lazily_installed_output_hooks_are_not_duplicated(called_before: bool) -> None:
    model = _mixtral()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    ids = _ids()
    if called_before:  # transformers installs its output-capturing hooks on the first call
        assert len(model(input_ids=ids).router_logits) == 2
    before = _trace(model)
    report = verify(model, {"input_ids": ids})
    assert report.equivalent, str(report)
    assert _trace(model) == before
    # The model still behaves as before: one set of capturing hooks, 2 router_logits.
    assert len(model(input_ids=ids).router_logits) == 2
    assert _trace(model)["hook_count"] == (before["hook_count"] if called_before else 7)


def test_bert_hidden_states_under_checkpoint_list() -> None:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=100,
        max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    model = transformers.BertModel(cfg)
    ids = _ids()
    before = _trace(model)
    report = verify(
        model, {"input_ids": ids, "output_hidden_states": True}, checkpoint=["encoder.layer.0", "encoder.layer.1"]
    )
    assert report.equivalent, str(report)
    assert report.regions == ("encoder.layer.0", "encoder.layer.1")
    assert _trace(model) == before
    assert len(model(input_ids=ids, output_hidden_states=True).hidden_states) == 3


def test_rwkv_failing_without_checkpointing_is_not_blamed_on_checkpointing() -> None:
    """RWKV with use_cache=True modifies a saved tensor in place: it fails without checkpointing, so verify raises."""
    torch.manual_seed(0)
    cfg = transformers.RwkvConfig(
        vocab_size=100, context_length=16, hidden_size=32, num_hidden_layers=2, attention_hidden_size=32,
        intermediate_size=64,
    )
    model = transformers.RwkvForCausalLM(cfg)
    ids = _ids()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        model(input_ids=ids, use_cache=True).logits.sum().backward()
    model.zero_grad(set_to_none=True)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        verify(model, {"input_ids": ids, "use_cache": True})


# ----------------------------------------------------------------------------- round-off with reentrant checkpoint
def _bart() -> torch.nn.Module:
    cfg = transformers.BartConfig(
        vocab_size=1000, d_model=64, encoder_layers=4, decoder_layers=4, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=32,
        dropout=0.0, attention_dropout=0.0,
    )
    return transformers.BartForConditionalGeneration(cfg)


def _t5() -> torch.nn.Module:
    cfg = transformers.T5Config(
        vocab_size=1200, d_model=64, d_kv=16, d_ff=128, num_layers=4, num_decoder_layers=4, num_heads=4, dropout_rate=0.0
    )
    return transformers.T5ForConditionalGeneration(cfg)


@pytest.mark.parametrize("build", [_bart, _t5], ids=["bart", "t5"])
def test_reentrant_round_off_is_not_a_mismatch(build) -> None:  # type: ignore[no-untyped-def]
    """4+4 layers, >= 0.4M parameters: reentrant checkpoint sums gradients in another order (~1e-7 of their scale)."""
    torch.manual_seed(0)
    model = build()
    assert sum(p.numel() for p in model.parameters()) >= 400_000
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    model.train()
    g = torch.Generator().manual_seed(0)
    inputs = {"input_ids": torch.randint(0, 1000, (2, 12), generator=g), "decoder_input_ids": torch.randint(0, 1000, (2, 10), generator=g)}
    report = verify(model, inputs, localize=False)
    assert report.equivalent, str(report)
    assert len(report.regions) == 8
