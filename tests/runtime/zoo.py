"""Tiny real transformers models shared by the runtime tests (built from configs: no weights)."""

from __future__ import annotations

import torch
import transformers


def tiny_llama() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=100, max_position_embeddings=16, bos_token_id=0, eos_token_id=0,
    )
    return transformers.LlamaForCausalLM(cfg)


def tiny_gpt2() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=16, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(cfg)


def token_ids() -> dict[str, torch.Tensor]:
    return {"input_ids": torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(0))}
