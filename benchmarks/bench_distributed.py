"""Cost of a 2-rank verify_distributed against a 1-rank verify on the same tiny transformers model.

    python benchmarks/bench_distributed.py [--world-size 2]

Prints the wall time of ``verify`` (one process, imports warm), of ``verify_distributed`` under
DDP and FSDP2 (each starting its ranks afresh), and the checkpointed step time inside rank 0.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "distributed"))

import dist_models  # noqa: E402

from runtime_checks import verify  # noqa: E402
from runtime_checks.distributed import verify_distributed  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world-size", type=int, default=2)
    args = parser.parse_args()
    ids = torch.randint(0, 100, (4, 16), generator=torch.Generator().manual_seed(0))
    inputs = {"input_ids": ids, "labels": ids}
    verify(dist_models.gpt2_tiny(), inputs)  # imports and first-call costs off the clock
    start = time.perf_counter()
    single = verify(dist_models.gpt2_tiny(), inputs)
    rows = [("verify, 1 process", time.perf_counter() - start, single.equivalent, single.timing.checkpointed_s)]
    for wrap in ("ddp", "fsdp2"):
        start = time.perf_counter()
        report = verify_distributed(dist_models.gpt2_tiny, inputs, world_size=args.world_size, wrap=wrap)
        rows.append((f"verify_distributed, {args.world_size} ranks, {wrap}", time.perf_counter() - start,
                     report.equivalent, report.ranks[0].timing.checkpointed_s))
    for name, seconds, equivalent, step in rows:
        print(f"{name:40s} {seconds:7.2f} s  equivalent={equivalent}  checkpointed step {step * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
