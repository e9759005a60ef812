"""``ckptlint verify ... --nproc N --wrap ddp|fsdp2``: the CLI's distributed path.

Each example costs a fresh set of ``N`` processes (seconds each), so the
examples are drawn up front (hypothesis, seeded, no shrinking) and verified
one after another; the first that is not equivalent is printed.
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["draw_examples", "run_distributed"]


def draw_examples(strategy: Any, count: int, seed: int, min_batch: int) -> list[Any]:
    """``count`` inputs drawn from ``strategy`` with ``seed``, each with a batch of at least ``min_batch``."""
    from hypothesis import HealthCheck, Phase, assume, given, settings
    from hypothesis import seed as seed_decorator

    from runtime_checks._dist_job import tensors

    drawn: list[Any] = []

    @seed_decorator(seed)
    @settings(
        max_examples=count,
        phases=[Phase.generate],
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value: Any) -> None:
        first = next(iter(tensors(value)), None)
        assume(first is None or first.dim() == 0 or first.shape[0] >= min_batch)
        if len(drawn) < count:
            drawn.append(value)

    collect()
    return drawn


def run_distributed(args: Any, strategy: Any, argv: list[str]) -> int:
    """Verify ``args.target`` on ``args.nproc`` processes for each drawn example; return the exit code."""
    from runtime_checks.cli import EXIT_ERROR, EXIT_MISMATCH, EXIT_OK, UsageError, reproduce_command
    from runtime_checks.distributed import DistributedError, verify_distributed
    from runtime_checks.verify import VerifyError

    if args.nproc < 1:
        raise UsageError(f"--nproc must be >= 1, got {args.nproc}")
    target = args.target
    where = target.rpartition(":")[0]
    if where.endswith(".py") or os.sep in where:  # the ranks import it by path: make it absolute
        target = os.path.abspath(where) + ":" + target.rpartition(":")[2]
    hseed = args.hypothesis_seed if args.hypothesis_seed is not None else int.from_bytes(os.urandom(4), "little")
    examples = draw_examples(strategy, args.examples, hseed, args.nproc)
    if not examples:
        raise UsageError(f"no drawn input has a batch of at least --nproc {args.nproc}; widen the batch with --dim B=...")
    kwargs: dict[str, Any] = {
        "rtol": args.rtol, "atol": args.atol, "seed": args.seed,
        "allow_no_checkpoint": bool(getattr(args, "allow_no_checkpoint", False)),
    }
    if args.checkpoint_type:
        kwargs["checkpoint"] = args.checkpoint_type
        kwargs["checkpoint_kwargs"] = {"use_reentrant": bool(args.reentrant)}
    for i, example in enumerate(examples, 1):
        try:
            report = verify_distributed(
                target, example, world_size=args.nproc, wrap=args.wrap, backend=args.backend,
                timeout=args.timeout, **kwargs,
            )
        except VerifyError as exc:
            raise UsageError(str(exc)) from None
        except DistributedError as exc:
            print(f"ckptlint verify: error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        print(f"example {i}/{len(examples)}: {'equivalent' if report.equivalent else 'NOT EQUIVALENT'}", file=sys.stderr)
        if not report.equivalent:
            _show(args, report, reproduce_command(argv, hseed))
            return EXIT_MISMATCH
    if getattr(args, "format", "text") != "json":
        print(f"EQUIVALENT under {args.wrap.upper()} on {args.nproc} processes for {len(examples)} example(s); last:")
    _show(args, report, None)
    return EXIT_OK


def _show(args: Any, report: Any, reproduce: str | None) -> None:
    if getattr(args, "format", "text") == "json":
        import json

        print(json.dumps({
            "equivalent": report.equivalent, "world_size": report.world_size, "wrap": report.wrap,
            "backend": report.backend, "seconds": report.seconds, "reproduce": reproduce,
            "ranks": [r.to_dict() for r in report.ranks],
        }, allow_nan=False))
        return
    print(str(report))
    if reproduce:
        print(f"reproduce: {reproduce}")
