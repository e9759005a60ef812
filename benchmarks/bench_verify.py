"""Cost of ``runtime_checks.verify`` against the training steps it replays, on real zoo models.

In one process, per model: one plain training step (checkpointing bypassed),
one checkpointed step, one ``verify`` call — each the fastest of ``--repeat``.
Targets (issue 10, item 4): verify <= 1.5 x (plain + checkpointed + plain)
for an equivalent model, <= 3 x for a failing one whatever its region count,
and verify's peak memory above a plain step's peak <= two copies of the
gradients plus the buffers.

    python benchmarks/bench_verify.py                      # transformers models (torch 2.13 venv)
    .venv214/bin/python benchmarks/bench_verify.py         # + timm, torchvision (skipped where missing)
    python benchmarks/bench_verify.py --models gpt2,llama --device cuda

Peak memory: on CPU the process's peak resident set (VmHWM, reset before each
phase through /proc/self/clear_refs); on CUDA torch.cuda.max_memory_allocated.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from runtime_checks import bypass_checkpointing, verify  # noqa: E402

Built = tuple[torch.nn.Module, Any]


def _ids(n: int = 16) -> torch.Tensor:
    return torch.randint(0, 100, (2, n), generator=torch.Generator().manual_seed(0))


def _gpt2() -> Built:
    import transformers

    cfg = transformers.GPT2Config(n_layer=4, n_embd=64, n_head=4, vocab_size=100, n_positions=32)
    m = transformers.GPT2LMHeadModel(cfg)
    m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return m.train(), {"input_ids": _ids()}


def _llama() -> Built:
    import transformers

    cfg = transformers.LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=100, max_position_embeddings=32,
    )
    m = transformers.LlamaForCausalLM(cfg)
    m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return m.train(), {"input_ids": _ids()}


def _bert() -> Built:
    import transformers

    cfg = transformers.BertConfig(
        hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128, vocab_size=100,
        max_position_embeddings=32,
    )
    m = transformers.BertForMaskedLM(cfg)
    m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return m.train(), {"input_ids": _ids()}


def _timm(name: str) -> Callable[[], Built]:
    def build() -> Built:
        import timm

        m = timm.create_model(name, pretrained=False, num_classes=10)
        m.set_grad_checkpointing(True)
        return m.train(), torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))

    return build


def _densenet() -> Built:
    import torchvision

    m = torchvision.models.densenet121(memory_efficient=True, num_classes=10)
    return m.train(), torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


MODELS: dict[str, tuple[str, Callable[[], Built]]] = {
    "gpt2": ("transformers", _gpt2),
    "llama": ("transformers", _llama),
    "bert": ("transformers", _bert),
    "resnet50": ("timm", _timm("resnet50")),
    "efficientnet_b0": ("timm", _timm("efficientnet_b0")),
    "densenet121": ("torchvision", _densenet),
}


def _reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return
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


def _move(inputs: Any, device: torch.device) -> Any:
    if isinstance(inputs, dict):
        return {k: v.to(device) for k, v in inputs.items()}
    return inputs.to(device)


def _step(model: torch.nn.Module, inputs: Any) -> None:
    out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    t = out.logits if hasattr(out, "logits") else out
    t.float().sum().backward()
    for p in model.parameters():
        p.grad = None


@dataclass
class Row:
    name: str
    regions: int
    equivalent: bool
    plain_s: float
    ckpt_s: float
    verify_s: float
    extra_mib: float
    budget_mib: float

    @property
    def ratio(self) -> float:
        return self.verify_s / (2 * self.plain_s + self.ckpt_s)

    @property
    def target(self) -> float:
        return 1.5 if self.equivalent else 3.0

    def met(self) -> bool:
        return self.ratio <= self.target and self.extra_mib <= self.budget_mib


def measure(name: str, build: Callable[[], Built], device: torch.device, repeat: int) -> Row:
    torch.manual_seed(0)
    model, inputs = build()
    model.to(device)
    inputs = _move(inputs, device)
    grad_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    buffer_bytes = sum(b.numel() * b.element_size() for b in model.buffers())

    def plain() -> None:
        with bypass_checkpointing(model):
            _step(model, inputs)

    plain()  # warm-up: allocator, lazy imports, checkpoint's first call
    _step(model, inputs)
    plain_s = ckpt_s = verify_s = math.inf
    plain_peak = verify_peak = 0
    report = None
    for _ in range(repeat):
        _reset_peak(device)
        t = time.perf_counter()
        plain()
        plain_s = min(plain_s, time.perf_counter() - t)
        plain_peak = max(plain_peak, _peak(device))
        t = time.perf_counter()
        _step(model, inputs)
        ckpt_s = min(ckpt_s, time.perf_counter() - t)
        _reset_peak(device)
        t = time.perf_counter()
        report = verify(model, inputs)
        verify_s = min(verify_s, time.perf_counter() - t)
        verify_peak = max(verify_peak, _peak(device))
    assert report is not None
    mib = 1024 * 1024
    return Row(
        name, len(report.regions), report.equivalent, plain_s, ckpt_s, verify_s,
        (verify_peak - plain_peak) / mib, (2 * grad_bytes + buffer_bytes) / mib,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated, from: " + ", ".join(MODELS))
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--repeat", type=int, default=2, help="repeat each phase, keep the fastest (default 2)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for name in args.models.split(","):
        package, build = MODELS[name]
        if importlib.util.find_spec(package) is None:
            print(f"skip {name}: {package} not installed", file=sys.stderr)
            continue
        rows.append(measure(name, build, device, args.repeat))
        print(f"done {name}", file=sys.stderr)
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, best of {args.repeat}")
    print("| model | regions | verdict | plain s | checkpointed s | verify s | verify / (2 plain + ckpt) | target "
          "| extra peak MiB | budget MiB |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r.name} | {r.regions} | {'equivalent' if r.equivalent else 'NOT EQUIVALENT'} | {r.plain_s:.3f} "
              f"| {r.ckpt_s:.3f} | {r.verify_s:.3f} | **{r.ratio:.2f}** | <= {r.target} | {r.extra_mib:.0f} "
              f"| {r.budget_mib:.0f} |")
    missed = [r.name for r in rows if not r.met()]
    print("all targets met" if not missed else f"MISSED: {', '.join(missed)}")
    return 0 if not missed else 1


if __name__ == "__main__":
    raise SystemExit(main())
