"""Ground truth for CKP207 (fixture ``megatron_aux_loss_tracker.py``): the module-level tracker records
the aux loss twice per step under checkpoint (forward + recompute), once without. The verifier compares
model state, not module globals, so this is checked directly."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "megatron_aux_loss_tracker.py"


def test_tracker_records_twice_under_checkpoint() -> None:
    spec = importlib.util.spec_from_file_location("ckptlint_fixture_tracker", FIXTURE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    model = module.Model(8)
    x = torch.randn(4, 8)
    model(x).sum().backward()
    assert len(module.aux_loss_tracker.values) == 2
    module.aux_loss_tracker.values.clear()
    model.router(x).sum().backward()
    assert len(module.aux_loss_tracker.values) == 1
