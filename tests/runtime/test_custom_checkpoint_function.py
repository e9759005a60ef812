"""Ground truth for custom checkpoint autograd.Functions (fixture ``custom_checkpoint_function_rng.py``).

A Function that reruns the layer in backward without restoring the RNG gives dropout a fresh mask on the
recompute: its gradients differ from the same layer run without checkpoint. The RNG-restoring one
matches. (``runtime_checks.verify`` cannot bypass a home-made Function, so this is checked directly.)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "custom_checkpoint_function_rng.py"


def _load():
    spec = importlib.util.spec_from_file_location("ckptlint_fixture_custom_fn", FIXTURE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _grads(layer: torch.nn.Module, run, x: torch.Tensor) -> list[torch.Tensor]:
    layer.zero_grad()
    torch.manual_seed(1)
    run(layer, x).sum().backward()
    return [p.grad.clone() for p in layer.parameters()]


@pytest.mark.parametrize(("function", "same"), [("OffloadedCheckpointer", False), ("RngSafeCheckpointer", True)])
def test_recompute_replays_dropout_only_when_rng_is_restored(function: str, same: bool) -> None:
    module = _load()
    torch.manual_seed(0)
    layer = module.DecoderLayer(16).train()
    x = torch.randn(8, 16, requires_grad=True)  # a Function over grad-less inputs gives no grads at all (CKP403)
    fn = getattr(module, function)
    checkpointed = _grads(layer, lambda m, t: fn.apply(m, t), x)
    plain = _grads(layer, lambda m, t: m(t), x)
    equal = all(torch.allclose(a, b) for a, b in zip(checkpointed, plain))
    assert equal is same
