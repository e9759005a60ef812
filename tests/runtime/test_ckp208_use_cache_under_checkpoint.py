"""Ground truth for CKP208 (fixture ``use_cache_under_checkpoint.py``).

A layer that appends to its KV cache under checkpoint appends again in backward's recompute: two layers
leave four entries instead of two. ``runtime_checks.verify`` calls this EQUIVALENT (the cache is built
inside the forward, so no state it compares differs), which is why the count is checked directly.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "use_cache_under_checkpoint.py"


def test_recompute_writes_the_cache_again() -> None:
    spec = importlib.util.spec_from_file_location("ckptlint_fixture_use_cache", FIXTURE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    model = module.Decoder(8, 2)
    x = torch.randn(4, 8, requires_grad=True)

    plain = module.KVCache()
    h = x
    for layer in model.layers:
        h = layer(h, plain)
    h.sum().backward()

    checkpointed: list = []
    original = module.KVCache.__init__

    def record(self) -> None:
        original(self)
        checkpointed.append(self)

    module.KVCache.__init__ = record
    model(x).sum().backward()
    assert len(plain.keys) == 2
    assert [len(c.keys) for c in checkpointed] == [4]
