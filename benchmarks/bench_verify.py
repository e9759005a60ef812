"""Cost of ``runtime_checks.verify`` against the training steps it replays.

In one process, on a ~50M-parameter transformer: one plain training step
(forward + backward), one checkpointed step, one ``verify`` call.
Targets (issue 4): verify wall time <= 1.3 x (plain + checkpointed + plain),
and verify's peak memory above a plain step's peak <= two copies of the
gradients plus the buffers.

    python benchmarks/bench_verify.py                 # CPU
    python benchmarks/bench_verify.py --device cuda   # when a GPU is present

Peak memory: on CPU the process's peak resident set (VmHWM, reset before each
phase through /proc/self/clear_refs); on CUDA torch.cuda.max_memory_allocated.
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from runtime_checks import verify  # noqa: E402


class Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(a)
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class TinyLM(nn.Module):
    def __init__(self, vocab: int = 8192, d: int = 512, layers: int = 16, heads: int = 8, ctx: int = 256) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(ctx, d))
        self.blocks = nn.ModuleList([Block(d, heads) for _ in range(layers)])
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.checkpointing = False

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids) + self.pos[: ids.shape[1]]
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False) if self.checkpointing else block(x)
        return self.head(self.ln(x))


def _reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
        except OSError:
            pass


def _peak(device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device))
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return -1


def _step(model: TinyLM, ids: torch.Tensor, proj: torch.Tensor) -> None:
    for p in model.parameters():
        p.grad = None
    loss = (model(ids).float() * proj).sum()
    loss.backward()


def _timed(device: torch.device, fn) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    _reset_peak(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return seconds, _peak(device), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--d-model", type=int, default=512)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--repeat", type=int, default=3, help="repeat each phase, keep the fastest (default 3)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = TinyLM(d=args.d_model, layers=args.layers).to(device).train()
    n_params = sum(p.numel() for p in model.parameters())
    grad_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    buffer_bytes = sum(b.numel() * b.element_size() for b in model.buffers())
    ids = torch.randint(0, 8192, (args.batch, args.seq), device=device)
    proj = torch.randn(args.batch, args.seq, 8192, device=device)

    _step(model, ids, proj)  # warm-up: allocator, lazy imports, checkpoint's first call
    model.checkpointing = True
    _step(model, ids, proj)
    model.checkpointing = False
    for p in model.parameters():
        p.grad = None

    # Shared machines are noisy: repeat the three phases, keep each one's fastest
    # time and its highest peak.
    plain_s = ckpt_s = verify_s = math.inf
    plain_peak = ckpt_peak = verify_peak = 0
    report = None
    for _ in range(args.repeat):
        model.checkpointing = False
        s, peak, _ = _timed(device, lambda: _step(model, ids, proj))
        plain_s, plain_peak = min(plain_s, s), max(plain_peak, peak)
        for p in model.parameters():
            p.grad = None
        model.checkpointing = True
        s, peak, _ = _timed(device, lambda: _step(model, ids, proj))
        ckpt_s, ckpt_peak = min(ckpt_s, s), max(ckpt_peak, peak)
        for p in model.parameters():
            p.grad = None
        s, peak, report = _timed(device, lambda: verify(model, ids, localize=False))
        verify_s, verify_peak = min(verify_s, s), max(verify_peak, peak)
    assert report is not None

    extra = verify_peak - plain_peak
    mem_budget = 2 * grad_bytes + buffer_bytes
    mib = 1024 * 1024
    rows = [
        ("plain step", f"{plain_s:.2f}", f"{plain_peak / mib:.0f}"),
        ("checkpointed step", f"{ckpt_s:.2f}", f"{ckpt_peak / mib:.0f}"),
        ("verify()", f"{verify_s:.2f}", f"{verify_peak / mib:.0f}"),
    ]
    print(f"model: {n_params / 1e6:.1f}M parameters, {args.layers} layers, d={args.d_model}, "
          f"batch {args.batch}x{args.seq}, device {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, best of {args.repeat}, equivalent={report.equivalent}")
    print("| phase | wall s | peak MiB |")
    print("|---|---:|---:|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")
    ratio = verify_s / (plain_s + ckpt_s + plain_s)
    print(f"verify / (plain + checkpointed + plain) = {ratio:.2f} (target <= 1.30: {'met' if ratio <= 1.3 else 'MISSED'})")
    print(f"verify peak - plain peak = {extra / mib:.0f} MiB; 2 x grads + buffers = {mem_budget / mib:.0f} MiB "
          f"({'met' if extra <= mem_budget else 'MISSED'})")
    print(f"report: saved-for-backward {report.memory.saved_bytes_baseline / mib:.1f} MiB baseline, "
          f"{report.memory.saved_bytes_checkpointed / mib:.1f} MiB checkpointed; time ratio {report.timing.ratio:.2f}")
    return 0 if ratio <= 1.3 and extra <= mem_budget and report.equivalent and not math.isnan(ratio) else 1


if __name__ == "__main__":
    raise SystemExit(main())
