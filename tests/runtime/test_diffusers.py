"""diffusers UNet2DModel with enable_gradient_checkpointing(): equivalent, regions by module path."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers", exc_type=ImportError)

from runtime_checks import verify  # noqa: E402

pytestmark = pytest.mark.slow


def test_tiny_unet_equivalent() -> None:
    torch.manual_seed(0)
    model = diffusers.UNet2DModel(
        sample_size=16,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    )
    model.enable_gradient_checkpointing()  # stores partial(checkpoint, ...) as _gradient_checkpointing_func
    model.train()
    inputs = {"sample": torch.randn(2, 3, 16, 16), "timestep": torch.tensor([10, 20])}
    report = verify(model, inputs)
    assert report.equivalent, str(report)
    assert "down_blocks.0.resnets.0" in report.regions and "up_blocks.1.resnets.1" in report.regions
    assert report.memory.saved_bytes_checkpointed < report.memory.saved_bytes_baseline
