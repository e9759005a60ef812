"""Ground truth for CKP403's script shape: transformers 5.x guards text models, not vision ones.

``gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})`` on a model whose
only trainable parameters sit inside the checkpointed layers (LoRA-style): for an ``input_ids`` model
transformers calls ``enable_input_require_grads()`` itself and the parameters get gradients; for a ViT
(``pixel_values``) nothing requires grad after the frozen patch embedding and the loss has no grad_fn.
The linter flags exactly the second (fixtures ``peft_vision_reentrant_script.py`` /
``benign_peft_text_reentrant_script.py``).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning"), pytest.mark.filterwarnings("ignore::UserWarning")]

if int(transformers.__version__.split(".")[0]) < 5:
    pytest.skip("the input_ids guard measured here is transformers 5.x's", allow_module_level=True)


def _trainable_grads(model: torch.nn.Module, inputs: dict, reentrant: bool) -> list[bool] | None:
    model.train()
    for name, p in model.named_parameters():
        p.requires_grad_("q_proj" in name)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    loss = model(**inputs).logits.float().sum()
    if not loss.requires_grad:
        return None
    loss.backward()
    return [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.parameters() if p.requires_grad]


def test_text_model_keeps_gradients_vision_model_loses_them() -> None:
    torch.manual_seed(0)
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, bos_token_id=0, eos_token_id=0,
    ))
    assert llama.main_input_name == "input_ids"
    grads = _trainable_grads(llama, {"input_ids": torch.randint(0, 64, (2, 5))}, reentrant=True)
    assert grads and all(grads)

    def vit() -> torch.nn.Module:
        return transformers.ViTForImageClassification(transformers.ViTConfig(
            hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=8,
            patch_size=4, num_labels=3,
        ))

    pixels = {"pixel_values": torch.randn(2, 3, 8, 8)}
    assert vit().main_input_name == "pixel_values"
    assert _trainable_grads(vit(), pixels, reentrant=True) is None
    grads = _trainable_grads(vit(), pixels, reentrant=False)
    assert grads and all(grads)
