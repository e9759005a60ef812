"""timm models with set_grad_checkpointing(True). Needs timm + torchvision: runs in the torch 2.14.1 stage.

(PyPI's torchvision only imports beside torch==2.14.1 torchvision==0.29.1; see docs/runtime.md.)
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm", exc_type=ImportError)

from runtime_checks import verify  # noqa: E402

pytestmark = pytest.mark.slow


def test_vit_tiny_equivalent() -> None:
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=4, num_classes=10)
    model.set_grad_checkpointing(True)
    model.train()
    report = verify(model, torch.randn(2, 3, 32, 32))
    assert report.equivalent, str(report)
    assert report.regions == ("blocks.0", "blocks.1", "blocks.2", "blocks.3")  # via timm's checkpoint_seq
    assert report.memory.saved_bytes_checkpointed < report.memory.saved_bytes_baseline


def test_resnet18_train_mode_batchnorm_buffers_differ() -> None:
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=10)
    model.set_grad_checkpointing(True)
    model.train()
    x = torch.randn(2, 3, 32, 32)
    report = verify(model, x)
    assert not report.equivalent
    kinds = {m.kind for m in report.mismatches}
    assert kinds == {"buffer"}, str(report)  # gradients agree: the recompute sees the same batch statistics
    by_name = {m.name: m for m in report.mismatches}
    assert by_name["layer1.0.bn1.num_batches_tracked"].max_abs_err == 1  # counted twice per step
    assert by_name["layer1.0.bn1.running_mean"].region == "layer1.0"
    assert by_name["layer4.1.bn2.running_var"].region == "layer4.1"
    # In eval mode BatchNorm reads its statistics instead of updating them: equivalent.
    model.eval()
    assert verify(model, x, localize=False).equivalent
    assert model.training is False
