"""Recompute value check: each region's forward against its own recompute, op by op; CheckpointError decoded."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import torch.nn as nn  # noqa: E402
from torch.utils.checkpoint import checkpoint  # noqa: E402

from runtime_checks import Report, verify  # noqa: E402
from runtime_checks.advice import advise  # noqa: E402
from runtime_checks.verify import _Engine  # noqa: E402
from tests.runtime.test_bypass import Counted  # noqa: E402
from tests.runtime.reporting import one_line  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")]


class Scaled(Counted):
    """Same shapes every call, other values on the recompute: a call counter scales the output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.tanh(self.lin(x) * self.calls)  # SCALE-LINE


class Deep(nn.Module):
    def __init__(self, n: int = 12, bad: int = 7) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Scaled() if i == bad else nn.Sequential(nn.Linear(8, 8), nn.Tanh()) for i in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = checkpoint(b, x, use_reentrant=False)
        return x


def _line(marker: str) -> int:
    lines = inspect.getsource(inspect.getmodule(Scaled)).splitlines()  # type: ignore[arg-type]
    return next(i for i, line in enumerate(lines, 1) if marker in line and "marker" not in line)


def test_same_shape_divergence_named_by_op_module_and_line() -> None:
    report = verify(Deep(), torch.randn(2, 8))
    assert not report.equivalent
    (d,) = report.recompute
    assert (d.region, d.module, d.what) == ("blocks.7", "blocks.7", "value")
    assert d.op == "Tensor.mul"
    assert d.source.endswith(f"test_recompute.py:{_line('# SCALE-LINE')}")
    # Every mismatch is blamed on the one region whose recompute diverged.
    assert {m.region for m in report.mismatches} == {"blocks.7"}
    assert "recompute-diverged" in [a.cause for a in advise(report)]
    assert "same shape, other values" in one_line(report)


def test_localisation_is_one_pass_not_one_run_per_region(monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[str] = []
    original = _Engine.one_run

    def counted(self, mode, *args, **kwargs):  # type: ignore[no-untyped-def]
        runs.append(mode)
        return original(self, mode, *args, **kwargs)

    monkeypatch.setattr(_Engine, "one_run", counted)
    report = verify(Deep(n=24, bad=19), torch.randn(2, 8))
    assert {m.region for m in report.mismatches} == {"blocks.19"}
    # forward-only memory run, baseline, checkpointed, second baseline, value check: no per-region runs.
    assert len(runs) == 5, runs


class GrowingCache(nn.Module):
    """A projection that attends over every input it has seen (a KV cache kept on the module)."""

    def __init__(self, proj: nn.Module) -> None:
        super().__init__()
        self.proj = proj
        self.cache: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.cache.append(x)
        seen = torch.cat(self.cache, dim=1)  # CACHE-LINE
        return self.proj(seen)[:, -x.shape[1] :]


def _verify_patched_gpt2(patch: Callable[[nn.Module], None]) -> Report:
    """verify() on a tiny GPT-2 (non-reentrant gradient checkpointing, train mode) after ``patch(model)``."""
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=16)
    model = transformers.GPT2LMHeadModel(cfg)
    patch(model)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    ids = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(0))
    return verify(model, {"input_ids": ids})


def test_checkpoint_error_from_a_growing_cache_is_decoded_on_gpt2() -> None:
    def grow(model: nn.Module) -> None:
        block = model.transformer.h[1]
        block.attn.c_attn = GrowingCache(block.attn.c_attn)

    report = _verify_patched_gpt2(grow)
    (err,) = [m for m in report.mismatches if m.kind == "error"]
    assert err.name == "CheckpointError" and err.region == "transformer.h.1"
    (d,) = report.recompute
    assert (d.region, d.op, d.what) == ("transformer.h.1", "torch.cat", "shape")
    assert d.module == "transformer.h.1.attn.c_attn"
    assert d.source.endswith(f"test_recompute.py:{_line('# CACHE-LINE')}")
    assert (d.forward, d.recompute) == ("torch.cat([2,8,32] float32)", "torch.cat([2,16,32] float32)")
    causes = [a.cause for a in advise(report)]
    assert causes[:2] == ["recompute-metadata", "recompute-diverged"]
    assert "a cache or list grown by the first run" in one_line(report)


class UpcastAfterFirstCall(nn.Module):
    """A projection that switches itself to float64 after its first call (a dtype flag set by the first run)."""

    def __init__(self, proj: nn.Module) -> None:
        super().__init__()
        self.proj = proj
        self.compute_dtype = torch.float32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.sin(x.to(self.compute_dtype))  # DTYPE-LINE
        self.compute_dtype = torch.float64
        return self.proj(h.to(x.dtype))


def test_checkpoint_error_from_a_dtype_change_names_the_dtype_cause_on_gpt2() -> None:
    def upcast(model: nn.Module) -> None:
        block = model.transformer.h[0]
        block.mlp.c_proj = UpcastAfterFirstCall(block.mlp.c_proj)

    report = _verify_patched_gpt2(upcast)
    (err,) = [m for m in report.mismatches if m.kind == "error"]
    assert err.name == "CheckpointError" and err.region == "transformer.h.0"
    (d,) = report.recompute
    assert (d.region, d.what) == ("transformer.h.0", "dtype")
    assert d.module == "transformer.h.0.mlp.c_proj"
    assert d.source.endswith(f"test_recompute.py:{_line('# DTYPE-LINE')}")
    (meta,) = [a for a in advise(report) if a.cause == "recompute-metadata"]
    assert "ran in another dtype than the forward" in meta.summary and meta.rule == "CKP205"
