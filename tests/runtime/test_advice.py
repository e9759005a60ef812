"""Say what to do: mismatches grouped by cause, with the fix and the lint rule; long region lists summarised."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import torch.nn as nn  # noqa: E402
from torch.utils.checkpoint import checkpoint  # noqa: E402

from runtime_checks import verify  # noqa: E402
from runtime_checks.advice import advise, summarise  # noqa: E402
from tests.runtime.models import Net, make_input  # noqa: E402
from tests.runtime.reporting import one_line  # noqa: E402


class BNStack(nn.Module):
    """Many checkpointed conv+BatchNorm layers (the shape of DenseNet's memory_efficient layers)."""

    def __init__(self, n: int = 22) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Sequential(nn.Conv1d(4, 4, 1), nn.BatchNorm1d(4), nn.ReLU()) for _ in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = checkpoint(layer, x, use_reentrant=False)
        return x


def test_batchnorm_rows_become_one_cause_with_fix_and_rule() -> None:
    report = verify(BNStack(), torch.randn(3, 4, 5))
    assert len([m for m in report.mismatches if m.kind == "buffer"]) == 66  # 22 layers x 3 buffers
    (bn,) = [a for a in advise(report) if a.cause == "batchnorm-twice"]
    assert bn.rule == "CKP204"
    assert bn.summary.startswith("running statistics of 22 BatchNorm layers in regions layers.{0..21} updated twice per step")
    text = one_line(report)
    assert "ckptlint rule CKP204" in text
    assert "... 46 more rows" in text  # the table is capped; report.mismatches keeps every row
    # Every buffer is blamed on its own layer without a localisation run.
    assert all(m.region == m.name.rsplit(".", 2)[0] for m in report.mismatches)


def test_rng_and_state_causes_name_their_rules() -> None:
    rng = advise(verify(Net("numpy_random"), make_input()))
    assert ("rng", "CKP302") in [(a.cause, a.rule) for a in rng]
    state = advise(verify(Net("counter_branch"), make_input()))
    assert "CKP201" in [a.rule for a in state]


def test_long_region_lists_are_summarised() -> None:
    names = [f"features.denseblock{b}.denselayer{i}" for b, n in ((1, 6), (2, 12), (3, 24), (4, 16)) for i in range(1, n + 1)]
    text = summarise(names, 8)
    assert text == (
        "features.denseblock1.denselayer{1..6}, features.denseblock2.denselayer{1..12}, "
        "features.denseblock3.denselayer{1..24}, features.denseblock4.denselayer{1..16}"
    )
    assert summarise([f"m{i}" for i in (1, 3, 5, 7, 9, 11, 13, 15)], 3) == "m1, m3, m5 and 5 more"


def test_densenet121_header_and_advice_fit_on_screen() -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.densenet121(memory_efficient=True, num_classes=4).train()
    report = verify(model, torch.randn(2, 3, 32, 32))
    assert len(report.regions) == 58 and not report.equivalent
    assert [a.cause for a in advise(report)] == ["batchnorm-twice"]
    lines = str(report).splitlines()
    assert lines[1].startswith("checkpoint regions: 58: features.denseblock1.denselayer{1..6}")
    assert max(len(line) for line in lines) < 400  # was one 2,000-character header line


class DictOutput(nn.Module):
    """Reentrant checkpoint of a region returning a dict: autograd.Function does not track tensors in a
    dict, so the region's parameters get no gradient, without a warning (its input requires grad)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.head = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)

    def region(self, h: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.b(h)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        return self.head(h) + checkpoint(self.region, h, use_reentrant=True)["out"]


def test_missing_gradients_without_the_warning_advise_non_reentrant() -> None:
    report = verify(DictOutput(), torch.randn(4, 8))
    assert not report.equivalent
    missing = sorted(m.name for m in report.mismatches if m.kind == "missing_grad")
    assert missing == ["b.bias", "b.weight"], report.mismatches
    (advice,) = [a for a in advise(report) if a.cause == "missing-grad"]
    assert advice.summary.startswith("2 tensors get no gradient in the checkpointed run (b.bias, b.weight)")
    assert "use_reentrant=False" in advice.fix and advice.rule == "CKP401"
    assert "use use_reentrant=False" in one_line(report)
