"""``ckptlint verify MODULE_OR_FILE:FACTORY --input SPEC ...``: verify a model on hypothesis-drawn inputs.

Exit codes: 0 equivalent on every example, 1 a counterexample was found
(its report is printed), 2 usage error, an error importing the target, or
the model failed without checkpointing too (one line on stderr naming the
source line, no traceback), 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import shlex
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

__all__ = ["load_factory", "main"]

EXIT_OK, EXIT_MISMATCH, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """A mistake on the command line: printed as one line, exit 2."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ckptlint verify",
        description="Run a model checkpointed and with checkpointing bypassed on hypothesis-drawn inputs; "
        "report any difference in outputs, gradients, buffers or RNG streams.",
    )
    p.add_argument("target", help="MODULE:FACTORY or path/to/file.py:FACTORY; FACTORY() returns an nn.Module")
    p.add_argument(
        "--input",
        dest="inputs",
        action="append",
        default=[],
        metavar="SPEC",
        help="one model argument: [name=]dtype[dims][:low:high][+grad], e.g. 'float32[B,16]', "
        "'input_ids=int64[B,T]:0:1000', 'x=float32[B,8]+grad'; names in dims are shared (repeatable)",
    )
    p.add_argument("--dim", action="append", default=[], metavar="NAME=LO:HI", help="bounds of a named dimension (default 1:8)")
    p.add_argument(
        "--examples", type=int, default=None, metavar="N", help="hypothesis examples to try (default 10; 1 with --nproc)"
    )
    p.add_argument("--device", default=None, help="device to run on (default: where the model is)")
    p.add_argument("--dtype", default=None, help="run the model in this dtype, e.g. float64")
    p.add_argument(
        "--checkpoint-type",
        default=None,
        metavar="CLASS",
        help="for a model that does not checkpoint itself: checkpoint every submodule of this class name",
    )
    p.add_argument("--reentrant", action="store_true", help="with --checkpoint-type: use_reentrant=True")
    p.add_argument("--seed", type=int, default=0, help="seed of every run (default 0)")
    p.add_argument("--hypothesis-seed", type=int, default=None, help="reproduce an earlier search")
    p.add_argument("--rtol", type=float, default=None)
    p.add_argument("--atol", type=float, default=None)
    p.add_argument("--no-localize", action="store_true", help="skip naming the responsible regions")
    p.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="'json': one JSON object on stdout (schema in docs/runtime.md); progress stays on stderr",
    )
    p.add_argument(
        "--allow-no-checkpoint", action="store_true",
        help="pass a model in which no checkpoint region ran (by default: not a pass, exit 1)",
    )
    p.add_argument("--autocast", choices=("bf16", "fp16"), default=None, help="run both sides under torch.autocast")
    dist = p.add_argument_group("distributed (see docs/distributed.md)")
    dist.add_argument("--nproc", type=int, default=None, metavar="N", help="verify on N processes under torch.distributed")
    dist.add_argument("--wrap", choices=("ddp", "fsdp2"), default="ddp", help="with --nproc: how each rank wraps the model")
    dist.add_argument("--backend", default=None, help="with --nproc: gloo (default on CPU) or nccl")
    dist.add_argument("--timeout", type=float, default=300.0, metavar="S", help="with --nproc: bound of the whole run")
    return p


def load_factory(target: str) -> Callable[[], Any]:
    """Resolve ``MODULE:FACTORY`` or ``FILE.py:FACTORY`` to the factory (or module instance) it names."""
    where, sep, attr = target.rpartition(":")
    if not sep or not where or not attr:
        raise UsageError(f"target {target!r} must be MODULE:FACTORY or path/to/file.py:FACTORY")
    if where.endswith(".py") or os.sep in where or "/" in where:
        path = Path(where)
        if not path.is_file():
            raise UsageError(f"target {target!r}: no such file {where!r}")
        name = f"_ckptlint_verify_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise UsageError(f"target {target!r}: cannot import {where!r}")
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(path.resolve().parent))
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - the user's module: report in one line
            raise UsageError(f"target {target!r}: importing {where!r} failed: {user_error(exc)}") from None
    else:
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as exc:
            if exc.name and where.startswith(exc.name) and where.split(".")[: exc.name.count(".") + 1] == exc.name.split("."):
                raise UsageError(f"target {target!r}: no module named {exc.name!r}") from None
            raise UsageError(f"target {target!r}: importing {where!r} failed: {user_error(exc)}") from None
        except Exception as exc:  # noqa: BLE001 - the user's module: report in one line
            raise UsageError(f"target {target!r}: importing {where!r} failed: {user_error(exc)}") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"target {target!r}: {where!r} has no attribute {attr!r}") from None
    import torch

    if isinstance(obj, torch.nn.Module):
        instance = obj
        return lambda: instance
    if not callable(obj):
        raise UsageError(f"target {target!r}: {attr!r} is {type(obj).__name__}, not a factory")
    return obj  # type: ignore[no-any-return]


class _Progress:
    """A bar on a terminal, one line per example elsewhere (CI logs)."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.stream = stream
        self.tty = stream.isatty()
        self.start = time.perf_counter()
        self.failed = False
        self.said_shrinking = False

    def __call__(self, i: int, report: Any) -> None:
        status = "ok" if report.equivalent else "MISMATCH"
        shrinking = i > self.total or (not report.equivalent and self.failed)
        if not report.equivalent:
            self.failed = True
        if self.tty:
            done = min(i, self.total)
            width = 24
            filled = int(width * done / max(self.total, 1))
            phase = "shrinking the counterexample" if shrinking else "examples"
            self.stream.write(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {i}/{self.total} {phase} {status:<8}"
                f" {time.perf_counter() - self.start:6.1f}s"
            )
        elif not self.failed or not shrinking:
            self.stream.write(f"example {i}/{self.total}: {status}\n")
        elif not self.said_shrinking:
            self.said_shrinking = True
            self.stream.write("shrinking the counterexample ...\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


_OWN_PACKAGES = ("runtime_checks", "torch", "hypothesis", "_pytest", "pluggy", "importlib")


def user_error(exc: BaseException, *, location_first: bool = True) -> str:
    """One line for an exception from the user's code, located at its innermost frame outside ours and torch's.

    ``file:line: Type: message`` (``location_first``), else
    ``Type: message (at file:line: source line)``.
    """
    text = str(exc).strip().splitlines()
    message = f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}: SyntaxError: {exc.msg}"
    where, in_backward = None, False
    for frame in traceback.extract_tb(exc.__traceback__):
        if not _internal(frame.filename):
            where = frame
        in_backward = in_backward or (frame.name == "backward" and "autograd" in Path(frame.filename).parts)
    if where is None and in_backward:  # autograd's errors carry no frame of the model
        return f"{message} (raised in backward: torch.autograd.set_detect_anomaly(True) shows the forward line)"
    if where is None:
        return message
    if location_first:
        return f"{where.filename}:{where.lineno}: {message}"
    source = f": {where.line.strip()}" if where.line else ""
    return f"{message} (at {where.filename}:{where.lineno}{source})"


def _internal(filename: str) -> bool:
    if filename.startswith("<frozen") or filename.startswith("<"):
        return True
    parts = Path(filename).parts
    return any(p in _OWN_PACKAGES for p in parts)


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def main(argv: Sequence[str]) -> int:
    """Run ``ckptlint verify`` with ``argv`` (the arguments after ``verify``); return the exit code."""
    missing = [m for m in ("torch", "hypothesis", "numpy") if not _installed(m)]
    if missing:
        print(
            f"ckptlint verify: error: {', '.join(missing)} not installed; ckptlint verify needs the runtime extra: "
            "pip install torch (first, the build you want) then pip install 'ckptlint[runtime]'",
            file=sys.stderr,
        )
        return EXIT_ERROR
    parser = _parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:  # argparse already printed its one-line usage error
        return EXIT_OK if exc.code == 0 else EXIT_ERROR
    try:
        return _run(args, list(argv))
    except UsageError as exc:
        print(f"ckptlint verify: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("\nckptlint verify: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    import torch

    from runtime_checks.assertions import (
        CheckpointMismatchError,
        check_checkpoint_equivalence,
    )
    from runtime_checks.snapshot import ParameterWriteError
    from runtime_checks.strategies import inputs as inputs_strategy
    from runtime_checks.strategies import parse_input_spec
    from runtime_checks.verify import VerifyError

    if not args.inputs:
        raise UsageError("give at least one --input, e.g. --input 'float32[B,16]'")
    if args.examples is None:
        args.examples = 1 if args.nproc else 10
    if args.examples < 1:
        raise UsageError(f"--examples must be >= 1, got {args.examples}")
    dims: dict[str, tuple[int, int]] = {}
    for d in args.dim:
        name, _, rng = d.partition("=")
        lo, _, hi = rng.partition(":")
        try:
            dims[name.strip()] = (int(lo), int(hi))
        except ValueError:
            raise UsageError(f"bad --dim {d!r}: expected NAME=LO:HI, e.g. B=1:4") from None
    positional, keyword = [], {}
    for spec in args.inputs:
        try:
            name, strategy = parse_input_spec(spec, dims)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if name is None:
            positional.append(strategy)
        else:
            keyword[name] = strategy
    if positional and keyword:
        raise UsageError("give every --input a name (x=...) or none: the model is called with one or the other")
    strategy = inputs_strategy(**keyword) if keyword else inputs_strategy(*positional)
    dtype = None
    if args.dtype is not None:
        dtype = getattr(torch, args.dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise UsageError(f"--dtype {args.dtype!r} is not a torch dtype")

    if args.nproc is not None:
        from runtime_checks._dist_cli import run_distributed

        return run_distributed(args, strategy, argv)
    factory = load_factory(args.target)
    try:
        model = factory()
    except Exception as exc:  # noqa: BLE001 - user code: report in one line
        raise UsageError(f"factory {args.target!r} raised {user_error(exc, location_first=False)}") from None
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"factory {args.target!r} returned {type(model).__name__}, not an nn.Module")

    verify_kwargs: dict[str, Any] = {
        "device": args.device,
        "dtype": dtype,
        "rtol": args.rtol,
        "atol": args.atol,
        "seed": args.seed,
        "localize": not args.no_localize,
        "allow_no_checkpoint": args.allow_no_checkpoint,
        "autocast": args.autocast,
    }
    if args.checkpoint_type:
        verify_kwargs["checkpoint"] = args.checkpoint_type
        verify_kwargs["checkpoint_kwargs"] = {"use_reentrant": bool(args.reentrant)}

    progress = _Progress(args.examples, sys.stderr)
    last: list[Any] = []

    def on_example(i: int, report: Any) -> None:
        last[:] = [report]
        progress(i, report)

    try:
        check_checkpoint_equivalence(
            model,
            strategy,
            max_examples=args.examples,
            hypothesis_seed=args.hypothesis_seed,
            on_example=on_example,
            **verify_kwargs,
        )
    except CheckpointMismatchError as exc:
        progress.close()
        reproduce = reproduce_command(argv, exc.hypothesis_seed)
        if args.format == "json":
            _print_json(args, exc.report, False, str(exc.inputs), reproduce)
            return EXIT_MISMATCH
        print(f"NOT EQUIVALENT: smallest failing input {exc.inputs}")
        print(f"reproduce: {reproduce}")
        print(str(exc.report))
        return EXIT_MISMATCH
    except (VerifyError, ParameterWriteError) as exc:
        progress.close()
        raise UsageError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - the model fails without checkpointing too
        progress.close()
        print(
            f"ckptlint verify: error: the model raised without checkpointing too "
            f"(not a checkpointing problem): {user_error(exc, location_first=False)}",
            file=sys.stderr,
        )
        return EXIT_ERROR
    progress.close()
    if args.format == "json":
        _print_json(args, last[0] if last else None, True, None, None)
        return EXIT_OK
    print(f"EQUIVALENT on {args.examples} example(s); last example:")
    if last:
        print(str(last[0]))
    return EXIT_OK


def reproduce_command(argv: Sequence[str], hypothesis_seed: int | None) -> str:
    """The command line that replays this search: the same arguments, the seed that found the counterexample."""
    args, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--hypothesis-seed":
            skip = True
            continue
        if a.startswith("--hypothesis-seed="):
            continue
        args.append(a)
    if hypothesis_seed is not None:
        args += ["--hypothesis-seed", str(hypothesis_seed)]
    return shlex.join(["ckptlint", "verify", *args])


def _print_json(args: argparse.Namespace, report: Any, equivalent: bool, failing: str | None, reproduce: str | None) -> None:
    payload = {
        "target": args.target,
        "equivalent": equivalent,
        "examples": args.examples,
        "failing_input": failing,
        "reproduce": reproduce,
        "report": report.to_dict() if report is not None else None,
    }
    print(json.dumps(payload, indent=2, sort_keys=False))
