"""``ckptlint profile TARGET`` and ``ckptlint plan TARGET --budget B``: the trade-off per region and the plan.

``TARGET`` is ``MODULE:FACTORY`` or ``path/to/file.py:FACTORY``; ``FACTORY()``
returns a model, or a ``(model, inputs)`` pair. ``--inputs TARGET`` names a
zero-argument callable returning the inputs otherwise. Exit codes: 0 done
(for ``plan --verify``: the plan is equivalent), 1 ``--verify`` found a
difference, 2 usage error (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from runtime_checks.cli import EXIT_ERROR, EXIT_MISMATCH, EXIT_OK, UsageError, load_factory

__all__ = ["main", "plan_table", "profile_table"]


def _parser(command: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"ckptlint {command}",
        description="Measure per-region activation memory and recompute time"
        + (" and choose the regions to checkpoint under a memory budget." if command == "plan" else "."),
    )
    p.add_argument("target", help="MODULE:FACTORY or path/to/file.py:FACTORY; FACTORY() returns a model or (model, inputs)")
    p.add_argument("--inputs", default=None, metavar="TARGET", help="MODULE:FUNC returning the model inputs")
    p.add_argument("--candidates", default=None, metavar="A,B", help="comma-separated module paths (default: the blocks)")
    p.add_argument("--repeats", type=int, default=3, help="timed forward passes per region (default 3)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--chart", default=None, metavar="PATH", help="write a PNG/SVG chart (needs the charts extra)")
    p.add_argument("--html", default=None, metavar="PATH", help="write an HTML report (needs the charts extra)")
    if command == "plan":
        p.add_argument("--budget", required=True, help="activation-memory budget: bytes, 2GiB, 512MB or 60%% of unchecked")
        p.add_argument("--allow-unsafe", action="store_true", help="consider regions with train-mode BatchNorm")
        p.add_argument("--no-segments", action="store_true", help="one region per checkpoint (no nn.Sequential segments)")
        p.add_argument("--verify", action="store_true", help="apply the plan, measure it and run the equivalence check")
    return p


def main(argv: Sequence[str]) -> int:
    """Run ``ckptlint profile|plan`` with ``argv`` (starting with the subcommand); return the exit code."""
    command, rest = argv[0], list(argv[1:])
    try:
        args = _parser(command).parse_args(rest)
    except SystemExit as exc:
        return EXIT_OK if exc.code == 0 else EXIT_ERROR
    try:
        return _run(command, args)
    except UsageError as exc:
        print(f"ckptlint {command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    import torch

    try:
        built = load_factory(args.target)()
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - user code: one line
        raise UsageError(f"factory {args.target!r} raised {type(exc).__name__}: {exc}") from None
    model, inputs = (built if isinstance(built, tuple) and len(built) == 2 else (built, None))
    if args.inputs:
        inputs = load_factory(args.inputs)()
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"factory {args.target!r} returned {type(model).__name__}, not an nn.Module or (model, inputs)")
    if inputs is None:
        raise UsageError(f"no inputs: let {args.target!r} return (model, inputs) or pass --inputs MODULE:FUNC")
    return model, inputs


def _run(command: str, args: argparse.Namespace) -> int:
    from runtime_checks.plan import PlanError, heuristics, plan
    from runtime_checks.profile import profile
    from runtime_checks.verify import VerifyError

    if args.repeats < 1:
        raise UsageError(f"--repeats must be >= 1, got {args.repeats}")
    model, inputs = _load(args)
    candidates = [c.strip() for c in args.candidates.split(",") if c.strip()] if args.candidates else None
    try:
        prof = profile(model, inputs, candidates=candidates, repeats=args.repeats)
        if command == "profile":
            _charts(args, prof, None, [])
            print(json.dumps(profile_dict(prof), indent=1) if args.format == "json" else profile_table(prof))
            return EXIT_OK
        chosen = plan(prof, args.budget, allow_unsafe=args.allow_unsafe, segments=not args.no_segments)
        others = heuristics(prof, args.budget)
    except PlanError as exc:
        raise UsageError(f"--budget: {exc}" if "budget" in str(exc) else str(exc)) from None
    except VerifyError as exc:
        raise UsageError(str(exc)) from None
    measured = None
    if args.verify:
        from runtime_checks.apply import measure_plan

        try:
            measured = measure_plan(model, inputs, chosen, repeats=args.repeats)
        except PlanError as exc:
            raise UsageError(str(exc)) from None
    _charts(args, prof, chosen, others)
    if args.format == "json":
        out: dict[str, Any] = chosen.to_dict()
        out["heuristics"] = [h.to_dict() for h in others]
        if measured is not None:
            out["measured"] = {"bytes": measured.measured_bytes, "step_s": measured.step_s,
                               "cuda_peak_bytes": measured.cuda_peak_bytes, "equivalent": measured.equivalent}
        print(json.dumps(out, indent=1))
    else:
        print(plan_table(prof, chosen, others))
        if measured is not None:
            print(f"measured: {_mib(measured.measured_bytes)} held (predicted {_mib(chosen.predicted_bytes)}), "
                  f"step {measured.step_s * 1e3:.1f} ms, {'equivalent' if measured.equivalent else 'NOT EQUIVALENT'}")
            if measured.report is not None and not measured.report.equivalent:
                print(str(measured.report))
    return EXIT_MISMATCH if measured is not None and measured.equivalent is False else EXIT_OK


def _charts(args: argparse.Namespace, prof: Any, chosen: Any, others: list[Any]) -> None:
    if not (args.chart or args.html):
        return
    try:
        from runtime_checks import charts
    except ImportError as exc:
        raise UsageError(f"--chart/--html need matplotlib: pip install 'ckptlint[charts]' ({exc})") from None
    if args.chart:
        charts.save_chart(prof, args.chart, chosen=chosen, heuristics=others)
    if args.html:
        charts.save_html(prof, args.html, chosen=chosen, heuristics=others)


# ----------------------------------------------------------------------------- text
def _mib(n: float) -> str:
    return f"{n / 2**20:.2f} MiB"


def profile_dict(prof: Any) -> dict[str, Any]:
    """The profile as JSON-ready data (storage groups summarised by count)."""
    import dataclasses

    return {
        "regions": [dataclasses.asdict(r) for r in prof.regions],
        "total_saved_bytes": prof.total_saved_bytes,
        "peak_bytes": prof.peak_bytes,
        "peak_kind": prof.peak_kind,
        "step_s": prof.step_s,
        "rng_bytes": prof.rng_bytes,
        "device": prof.device,
        "repeats": prof.repeats,
        "model_checkpointed": list(prof.model_checkpointed),
        "storage_groups": len(prof.groups),
    }


def profile_table(prof: Any) -> str:
    """A compact terminal table: one line per region."""
    width = max([len(r.name) for r in prof.regions] + [6])
    lines = [f"{'region':<{width}}  {'saved':>10}  {'kept':>10}  {'recompute':>16}  note"]
    for r in prof.regions:
        note = "; ".join(x for x in ("checkpointed by the model" if r.checkpointed else "", r.unsafe) if x)
        lines.append(
            f"{r.name:<{width}}  {_mib(r.saved_bytes):>10}  {_mib(r.kept_bytes):>10}  "
            f"{r.recompute_s * 1e3:>7.2f} ±{r.recompute_noise_s * 1e3:5.2f} ms  {note}"
        )
    kind = "CUDA max_memory_allocated" if prof.peak_kind == "cuda_max_memory_allocated" else "saved-tensor accounting"
    lines.append(
        f"unchecked: {_mib(prof.total_saved_bytes)} saved for backward; peak {_mib(prof.peak_bytes)} ({kind}); "
        f"step {prof.step_s * 1e3:.1f} ms on {prof.device}; {len(prof.regions)} regions, {prof.repeats} repeats"
    )
    return "\n".join(lines)


def plan_table(prof: Any, chosen: Any, others: Sequence[Any]) -> str:
    """The plan, how to apply it, and the heuristics at the same budget."""
    lines = [
        f"budget {_mib(chosen.budget_bytes)} of {_mib(prof.total_saved_bytes)} unchecked activations",
        f"plan: checkpoint {len(chosen.regions)} region(s): {', '.join(chosen.regions) or '(none)'}",
        f"      predicted {_mib(chosen.predicted_bytes)} held, {chosen.predicted_recompute_s * 1e3:.1f} ms recompute per step",
    ]
    for k, v in chosen.settings.items():
        lines.append(f"      as a library setting: {k} = {v!r}")
    for name, why in chosen.avoided:
        lines.append(f"      avoided {name}: {why}")
    lines.append(f"{'method':<16}  {'held':>11}  {'recompute':>11}  meets budget")
    for p in [chosen, *others]:
        lines.append(
            f"{p.method:<16}  {_mib(p.predicted_bytes):>11}  {p.predicted_recompute_s * 1e3:>8.1f} ms  {'yes' if p.meets_budget else 'no'}"
        )
    return "\n".join(lines)
