"""CKP403's training-script shape follows the transformers release and the model type (issue 9)."""

from __future__ import annotations

import pytest

from ckptlint.rules import _training_scripts

TEXT_SCRIPT = """
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

model = AutoModelForCausalLM.from_pretrained("m")
model = get_peft_model(model, LoraConfig(r=8))
model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
"""

DEFAULT_SCRIPT = """
from transformers import AutoModelForCausalLM

model = AutoModelForCausalLM.from_pretrained("m")
for p in model.model.embed_tokens.parameters():
    p.requires_grad = False
model.gradient_checkpointing_enable()
"""


@pytest.fixture
def transformers_major(monkeypatch: pytest.MonkeyPatch):
    def set_major(major: int) -> None:
        monkeypatch.setattr(_training_scripts, "transformers_major", lambda: major)
        from ckptlint.rules import ckp403_reentrant_no_grad_inputs as rule

        monkeypatch.setattr(rule, "transformers_major", lambda: major)

    return set_major


def test_text_model_is_guarded_on_transformers_5_not_on_4(lint_source, transformers_major) -> None:
    transformers_major(5)
    assert [f.code for f in lint_source(TEXT_SCRIPT)] == []
    transformers_major(4)
    found = lint_source(TEXT_SCRIPT)
    assert [(f.code, f.line) for f in found] == [("CKP403", 7)]
    assert "get_peft_model at line 6" in found[0].message


def test_default_kwargs_are_reentrant_only_before_transformers_5(lint_source, transformers_major) -> None:
    transformers_major(4)
    found = lint_source(DEFAULT_SCRIPT)
    assert [(f.code, f.line) for f in found] == [("CKP403", 7)]
    assert "the transformers 4.x default" in found[0].message
    transformers_major(5)
    assert lint_source(DEFAULT_SCRIPT) == []


def test_installed_release_is_read_from_metadata() -> None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        expected = int(version("transformers").split(".")[0])
    except PackageNotFoundError:
        expected = 5
    _training_scripts.transformers_major.cache_clear()
    assert _training_scripts.transformers_major() == expected
