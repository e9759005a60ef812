"""runtime_checks.profile: measured bytes and times per region, on plain modules and tiny real models."""

from __future__ import annotations

import math

import pytest
import torch

import runtime_checks
from runtime_checks.profile import default_candidates
from runtime_checks.verify import VerifyError
from tests.runtime.planner_models import Stack, inputs


def test_default_candidates_are_the_blocks_not_parameter_free_children() -> None:
    model = Stack(4)
    assert default_candidates(model) == [f"blocks.{i}" for i in range(4)]  # blocks.4 is a ReLU


def test_regions_measure_bytes_in_proportion_to_block_width() -> None:
    torch.manual_seed(0)
    model = Stack(6)
    prof = runtime_checks.profile(model, inputs(), repeats=2)
    assert [r.name for r in prof.regions] == [f"blocks.{i}" for i in range(6)]
    saved = [r.saved_bytes for r in prof.regions]
    # hidden widths 1x, 3x, 5x: the wider block saves more (its up/relu outputs)
    assert saved[0] < saved[1] < saved[2]
    assert saved[0] == saved[3] and saved[1] == saved[4]
    for r in prof.regions:
        assert r.kept_bytes >= 64 * 32 * 4  # its input, float32 [64, 32]
        assert r.recompute_s > 0 and (math.isnan(r.recompute_noise_s) or r.recompute_noise_s >= 0)
        assert r.calls == 1 and not r.unsafe and not r.checkpointed
    assert prof.total_saved_bytes >= sum(saved)
    assert prof.peak_kind == "saved_tensor_accounting" and prof.peak_bytes == prof.total_saved_bytes
    assert prof.sequential == {"blocks": True}


def test_profile_leaves_grads_buffers_and_rng_as_found() -> None:
    model = Stack(4, batchnorm_at=1)
    before = {n: b.clone() for n, b in model.named_buffers()}
    rng = torch.get_rng_state()
    prof = runtime_checks.profile(model, inputs(), repeats=1)
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[n], b) for n, b in model.named_buffers())
    assert torch.equal(rng, torch.get_rng_state())
    assert "BatchNorm1d" in prof.region("blocks.1").unsafe
    assert not prof.region("blocks.0").unsafe


def test_regions_the_model_checkpoints_are_marked_and_measured_unchecked() -> None:
    plain = runtime_checks.profile(Stack(4, sequential=False), inputs(), repeats=1)
    own = runtime_checks.profile(Stack(4, sequential=False, self_checkpoint=True), inputs(), repeats=1)
    assert own.model_checkpointed == tuple(f"blocks.{i}" for i in range(4))
    assert all(r.checkpointed for r in own.regions)
    assert [r.saved_bytes for r in own.regions] == [r.saved_bytes for r in plain.regions]


def test_explicit_candidates_and_bad_names() -> None:
    prof = runtime_checks.profile(Stack(4), inputs(), candidates=["blocks.0", "head"], repeats=1)
    assert [r.name for r in prof.regions] == ["blocks.0", "head"]
    with pytest.raises(VerifyError, match="no submodule 'nope'"):
        runtime_checks.profile(Stack(2), inputs(), candidates=["nope"])
    with pytest.raises(VerifyError, match="no candidate regions"):
        runtime_checks.profile(torch.nn.Linear(16, 4), inputs())


@pytest.mark.slow
def test_gpt2_layers_are_candidates_and_checkpointed_ones_are_known() -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_layer=3, n_embd=32, n_head=2, n_positions=32, vocab_size=64)
    model = transformers.GPT2LMHeadModel(cfg)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    prof = runtime_checks.profile(model, {"input_ids": ids}, repeats=1)
    assert [r.name for r in prof.regions] == [f"transformer.h.{i}" for i in range(3)]
    assert prof.model_checkpointed == tuple(f"transformer.h.{i}" for i in range(3))
    assert all(r.saved_bytes > r.kept_bytes for r in prof.regions)


def test_a_sequential_only_iterated_over_is_not_segmentable() -> None:
    class Looped(Stack):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.inp(x)
            for blk in self.blocks:
                h = blk(h)
            return self.head(h)

    assert runtime_checks.profile(Looped(3), inputs(), repeats=1).sequential == {"blocks": False}
