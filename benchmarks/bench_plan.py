"""Planner benchmark: profile real models, plan under a budget, measure the plan and the heuristics.

    python benchmarks/bench_plan.py --models gpt2,bert,unet          # transformers, diffusers
    python benchmarks/bench_plan.py --models vit,resnet              # timm (torch 2.14 venv)
    python benchmarks/bench_plan.py --models gpt2 --budget 40% --json out.json

For each model: ``runtime_checks.profile`` (one training step plus three
forward passes), ``runtime_checks.plan`` at the budget, then
``measure_plan`` for the plan (with ``verify`` on the planned
configuration) and for all-blocks, every-2nd and sqrt(n) segments at the
same budget. Prints one markdown table row per plan: predicted vs measured
activation bytes (saved-tensor accounting; on CUDA also
``max_memory_allocated``), step time against the unchecked step, and whether
the measured bytes meet the budget. Sizes are chosen so that activations
dominate the step's memory while a CPU step stays under a second or two.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import runtime_checks  # noqa: E402
from runtime_checks.plan import PlanError  # noqa: E402


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def gpt2() -> tuple[torch.nn.Module, Any]:
    import transformers

    cfg = transformers.GPT2Config(n_layer=6, n_embd=128, n_head=4, n_positions=512, vocab_size=512,
                                  attn_implementation="eager")
    return transformers.GPT2LMHeadModel(cfg).train(), {"input_ids": torch.randint(0, 512, (2, 384), generator=_gen()), "use_cache": False}


def bert() -> tuple[torch.nn.Module, Any]:
    import transformers

    cfg = transformers.BertConfig(num_hidden_layers=6, hidden_size=128, num_attention_heads=4, intermediate_size=512,
                                  vocab_size=512, max_position_embeddings=512, attn_implementation="eager")
    return transformers.BertModel(cfg).train(), {"input_ids": torch.randint(0, 512, (2, 256), generator=_gen())}


def vit() -> tuple[torch.nn.Module, Any]:
    import timm

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=96).train()
    return model, torch.randn(2, 3, 96, 96, generator=_gen())


def resnet() -> tuple[torch.nn.Module, Any]:
    import timm

    model = timm.create_model("resnet26", pretrained=False, num_classes=10).train()
    # BatchNorm frozen (eval), as in fine-tuning: checkpointing a train-mode
    # BatchNorm updates its running stats twice, and the planner avoids it.
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    return model, torch.randn(2, 3, 64, 64, generator=_gen())


def unet() -> tuple[torch.nn.Module, Any]:
    import diffusers

    model = diffusers.UNet2DModel(
        sample_size=64, in_channels=3, out_channels=3, layers_per_block=2,
        block_out_channels=(32, 64, 64, 64), norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    ).train()
    return model, {"sample": torch.randn(2, 3, 64, 64, generator=_gen()), "timestep": torch.tensor([10, 500])}


MODELS: dict[str, Callable[[], tuple[torch.nn.Module, Any]]] = {
    "gpt2": gpt2, "bert": bert, "vit": vit, "resnet": resnet, "unet": unet,
}


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f}"


def bench(name: str, budget: str, repeats: int = 3) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    model, inputs = MODELS[name]()
    t0 = time.perf_counter()
    prof = runtime_checks.profile(model, inputs, repeats=3)  # what profiling costs users: its default
    profile_s = time.perf_counter() - t0
    base = runtime_checks.measure_plan(model, inputs, runtime_checks.plan(prof, "100%"), check=False, repeats=repeats)
    if base.plan.regions:  # 100% never needs a checkpoint; guard the baseline anyway
        raise SystemExit(f"{name}: baseline plan is not empty")
    rows = []
    try:
        plans = [runtime_checks.plan(prof, budget)]
    except PlanError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        plans = []
    plans += runtime_checks.heuristics(prof, budget)
    for p in plans:
        # Timed without the equivalence check (it would share the process's caches with the timing);
        # the chosen plan is then verified on its own.
        m = runtime_checks.measure_plan(model, inputs, p, check=False, repeats=repeats)
        equivalent = (runtime_checks.measure_plan(model, inputs, p, check=True, repeats=1).equivalent
                      if p.method == "milp" else None)
        rows.append({
            "model": name,
            "regions": len(prof.regions),
            "unchecked_bytes": prof.total_saved_bytes,
            "budget_bytes": p.budget_bytes,
            "method": p.method,
            "plan": list(p.regions),
            "predicted_bytes": p.predicted_bytes,
            "measured_bytes": m.measured_bytes,
            "meets_budget_measured": m.measured_bytes <= (p.budget_bytes or 0),
            "predicted_recompute_s": p.predicted_recompute_s,
            "step_s": m.step_s,
            "baseline_step_s": base.step_s,
            "cuda_peak_bytes": m.cuda_peak_bytes,
            "baseline_cuda_peak_bytes": base.cuda_peak_bytes,
            "equivalent": equivalent,
            "profile_s": profile_s,
            "profile_steps": profile_s / base.step_s,
        })
    return rows


def _short(regions: list[str]) -> str:
    if len(regions) <= 4:
        return ", ".join(regions) or "(none)"
    return f"{len(regions)} units: {regions[0]} ... {regions[-1]}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | budget MiB (of unchecked) | method | plan | predicted MiB | measured MiB | meets | recompute ms | step s (unchecked) | verify |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        eq = {True: "equivalent", False: "DIFFERS", None: "-"}[r["equivalent"]]
        lines.append(
            f"| {r['model']} | {_mib(r['budget_bytes'])} ({_mib(r['unchecked_bytes'])}) | {r['method']} | {_short(r['plan'])} | "
            f"{_mib(r['predicted_bytes'])} | {_mib(r['measured_bytes'])} | {'yes' if r['meets_budget_measured'] else 'no'} | "
            f"{r['predicted_recompute_s'] * 1e3:.1f} | {r['step_s']:.3f} ({r['baseline_step_s']:.3f}) | {eq} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="gpt2,bert,unet", help=f"comma-separated, from {', '.join(MODELS)}")
    ap.add_argument("--budget", default="50%", help="activation-memory budget (bytes, 2GiB, or %% of unchecked)")
    ap.add_argument("--repeats", type=int, default=5, help="timed passes per measurement (default 5)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    for name in args.models.split(","):
        if name not in MODELS:
            ap.error(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
        rows += bench(name, args.budget, args.repeats)
        print(f"{name}: profiled in {rows[-1]['profile_s']:.1f}s = {rows[-1]['profile_steps']:.1f} steps", file=sys.stderr)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
