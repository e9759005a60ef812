"""Census: which regions ran, how often each was recomputed; a model that checkpoints nothing is not a pass."""

from __future__ import annotations

import functools

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from runtime_checks import verify  # noqa: E402
from runtime_checks.advice import advise  # noqa: E402
from tests.runtime.models import Net, PlainNet, make_input  # noqa: E402
from tests.runtime.reporting import one_line  # noqa: E402
from tests.runtime.zoo import tiny_llama, token_ids  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")]
pytest_plugins = ["pytester"]




def test_each_region_recomputed_exactly_once() -> None:
    model = tiny_llama()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    report = verify(model, token_ids())
    assert report.equivalent, str(report)
    assert [(c.name, c.entries, c.recomputes) for c in report.census] == [
        ("model.layers.0", 1, 1), ("model.layers.1", 1, 1)
    ]
    assert not any(c.nested for c in report.census)
    assert "recomputes per backward" not in one_line(report)


def test_checkpointing_silently_off_is_not_a_pass() -> None:
    model = tiny_llama()
    model.gradient_checkpointing_enable()
    model.eval()  # transformers checkpoints only in train mode: nothing is checkpointed
    report = verify(model, token_ids())
    assert not report.equivalent and not report.mismatches and not report.checkpointed
    assert [a.cause for a in advise(report)] == ["not-checkpointed"]
    text = one_line(report)
    assert "NOT CHECKPOINTED" in text and "allow_no_checkpoint=True" in text
    allowed = verify(model, token_ids(), allow_no_checkpoint=True)
    assert allowed.equivalent and "EQUIVALENT" in one_line(allowed)
    assert "not-checkpointed" not in [a.cause for a in advise(allowed)]


def test_plain_model_without_checkpoint_fails_unless_allowed() -> None:
    assert not verify(PlainNet(), make_input()).equivalent
    assert verify(PlainNet(), make_input(), allow_no_checkpoint=True).equivalent


@pytest.mark.parametrize("use_reentrant", [True, False], ids=["inner-reentrant", "inner-nonreentrant"])
def test_library_checkpointing_under_a_reentrant_wrapper_is_recomputed_twice(use_reentrant: bool) -> None:
    wrapper = pytest.importorskip("torch.distributed.algorithms._checkpoint.checkpoint_wrapper")
    model = tiny_llama()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    model.train()
    layer = transformers.models.llama.modeling_llama.LlamaDecoderLayer
    wrapper.apply_activation_checkpointing(
        model,
        checkpoint_wrapper_fn=functools.partial(wrapper.checkpoint_wrapper, checkpoint_impl=wrapper.CheckpointImpl.REENTRANT),
        check_fn=lambda m: isinstance(m, layer),
    )
    report = verify(model, token_ids())
    assert report.equivalent, str(report)  # right gradients, twice the recompute
    assert [c.recomputes for c in report.census] == [2, 2]
    assert "checkpointed-twice" in [a.cause for a in advise(report)]
    assert "recomputed 2 times per backward" in one_line(report)


def test_nested_checkpoint_is_flagged() -> None:
    wrapper = pytest.importorskip("torch.distributed.algorithms._checkpoint.checkpoint_wrapper")
    model = tiny_llama()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    model.train()
    layer = transformers.models.llama.modeling_llama.LlamaDecoderLayer
    wrapper.apply_activation_checkpointing(model, check_fn=lambda m: isinstance(m, layer))
    report = verify(model, token_ids())
    assert report.equivalent, str(report)
    assert all(c.nested and c.entries == 2 for c in report.census)
    assert "checkpointed-twice" in [a.cause for a in advise(report)]


def test_small_net_census() -> None:
    report = verify(Net(), make_input())
    assert [(c.name, c.recomputes) for c in report.census] == [("blocks.0", 1), ("blocks.1", 1), ("blocks.2", 1)]


def test_cli_exits_1_when_nothing_is_checkpointed(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from runtime_checks.cli import main

    (tmp_path / "plainmodel.py").write_text(
        "import torch.nn as nn\ndef build():\n    return nn.Sequential(nn.Linear(4, 4), nn.Tanh())\n"
    )
    target = f"{tmp_path / 'plainmodel.py'}:build"
    assert main([target, "--input", "float32[B,4]", "--examples", "2"]) == 1
    assert "NOT CHECKPOINTED" in capsys.readouterr().out
    assert main([target, "--input", "float32[B,4]", "--examples", "2", "--allow-no-checkpoint"]) == 0


def test_plugin_fails_a_test_whose_model_checkpoints_nothing(pytester) -> None:  # type: ignore[no-untyped-def]
    pytester.makepyfile(
        """
        import torch

        def test_plain(ckpt_verify):
            ckpt_verify(torch.nn.Linear(4, 4), torch.randn(2, 4))

        def test_plain_allowed(ckpt_verify):
            ckpt_verify(torch.nn.Linear(4, 4), torch.randn(2, 4), allow_no_checkpoint=True)
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
