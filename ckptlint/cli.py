"""Command line: ``ckptlint check``, ``rule``, ``clean``, ``server``, ``verify``.

Argument parsing, output and exit codes only; the run itself lives in
:mod:`ckptlint.runner` and the analysis in :mod:`ckptlint.engine`.
Exit status: 0 no findings, 1 findings (or, with ``--diff``, changes to
make), 2 usage, configuration or internal error, 130 interrupted (Ctrl-C).

This module dispatches the subcommands; the parser and the exit statuses are
in :mod:`ckptlint.cli_args`, ``check`` in :mod:`ckptlint.cli_check`, and what
``check`` prints in :mod:`ckptlint.cli_output`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

from ckptlint.cli_args import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK
from ckptlint.cli_args import EXIT_FINDINGS, FORMATS  # noqa: F401 - importable from here, as before
from ckptlint.cli_args import build_parser as _build_parser
from ckptlint.cli_check import cmd_check as _cmd_check
from ckptlint.cli_output import documented_rules as _documented_rules

__all__ = ["main"]


def _cmd_clean(args: argparse.Namespace) -> int:
    from ckptlint.cli_support import clean
    from ckptlint.config import ConfigError, load_config

    try:
        configs = [load_config([p]).with_cli(cache_dir=args.cache_dir) for p in args.paths]
    except ConfigError as exc:
        print(f"ckptlint: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return clean(configs, args.quiet, sys.stderr)


def _cmd_server() -> int:
    try:
        from ckptlint.lsp.server import serve
    except ImportError as exc:
        if (exc.name or "").split(".")[0] in ("pygls", "lsprotocol"):
            print("ckptlint server needs the lsp extra: pip install -e '.[lsp]' (from a clone)", file=sys.stderr)
            return EXIT_ERROR
        raise
    return serve()


def _cmd_rule(args: argparse.Namespace) -> int:
    from ckptlint.rules import rule_doc

    ALL_RULES, RULES_BY_CODE = _documented_rules()
    if args.format == "json":
        from ckptlint.cli_support import rules_json

        chosen = ALL_RULES if args.all or not args.code else [RULES_BY_CODE.get(args.code.upper())]
        if None in chosen:
            print(f"ckptlint: error: unknown rule {args.code!r} (see 'ckptlint rule --all')", file=sys.stderr)
            return EXIT_ERROR
        sys.stdout.write(rules_json(chosen))
        return EXIT_OK
    if args.all or not args.code:
        width = max(len(m.NAME) for m in ALL_RULES)
        for m in ALL_RULES:
            summary = rule_doc(m).splitlines()[0].split(": ", 1)[-1] if rule_doc(m) else ""
            print(f"{m.CODE}  {m.NAME:<{width}}  {summary}")
        return EXIT_OK
    code = args.code.upper()
    module = RULES_BY_CODE.get(code)
    if module is None:
        print(f"ckptlint: error: unknown rule {args.code!r} (see 'ckptlint rule --all')", file=sys.stderr)
        return EXIT_ERROR
    print(f"{module.CODE} ({module.NAME})\n")
    print(rule_doc(module))
    return EXIT_OK


def _missing_runtime(exc: ImportError) -> bool:
    """Whether ``exc`` means the runtime extra is absent: torch/hypothesis/numpy itself cannot be found.

    An ImportError raised inside an installed torch, or by the user's own
    module (``from mypkg import nope``, ``.name`` empty), is not that.
    """
    missing = (getattr(exc, "name", None) or "").split(".")[0]
    if missing not in ("torch", "hypothesis", "numpy", "scipy"):
        return False
    import importlib.util

    try:
        return importlib.util.find_spec(missing) is None
    except (ImportError, ValueError):
        return True


def _cmd_verify(argv: Sequence[str], entry: str = "runtime_checks.cli", command: str = "verify") -> int:
    # runtime_checks imports torch lazily, so a missing runtime extra can
    # surface at import time or only once the command runs.
    extra = "plan" if command == "plan" else "runtime"
    message = f"ckptlint {command} needs the {extra} extra: pip install 'ckptlint[{extra}]'"
    try:
        runtime_cli = importlib.import_module(entry)
    except ImportError as exc:
        if _missing_runtime(exc):
            print(message, file=sys.stderr)
            return EXIT_ERROR
        raise
    except KeyboardInterrupt:  # importing torch takes seconds
        print("\nckptlint verify: interrupted", file=sys.stderr)
        return 130
    try:
        return int(runtime_cli.main(list(argv)))
    except ImportError as exc:
        if _missing_runtime(exc):
            print(message, file=sys.stderr)
            return EXIT_ERROR
        raise
    except KeyboardInterrupt:
        print("\nckptlint verify: interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ckptlint`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "verify":
        try:
            return _cmd_verify(argv[1:])
        except Exception:  # a bug in ckptlint verify itself: show it, exit 2
            import traceback

            traceback.print_exc()
            return EXIT_ERROR
    if argv and argv[0] in ("profile", "plan"):
        return _cmd_verify(argv, "runtime_checks.plan_cli", argv[0])
    parser = _build_parser()
    args = parser.parse_args(argv)
    from ckptlint.workers import tune_gc

    tune_gc()  # this process is ckptlint's own: the lint runs in it when --jobs 1 or a small tree
    try:
        if args.command == "rule":
            return _cmd_rule(args)
        if args.command == "check":
            from ckptlint.sourcetext import freeze_after_parse

            freeze_after_parse()  # a short-lived process of ckptlint's own (see freeze_after_parse)
            return _cmd_check(args)
        if args.command == "server":
            return _cmd_server()
        if args.command == "clean":
            return _cmd_clean(args)
    except KeyboardInterrupt:
        # One line, whatever was running (workers ignore SIGINT; see runner).
        print("ckptlint: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `ckptlint check | head`: the reader left; say nothing more.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return EXIT_ERROR
    except Exception:  # a bug in ckptlint itself: show it, exit 2
        import traceback

        print("ckptlint: internal error:", file=sys.stderr)
        traceback.print_exc()
        return EXIT_ERROR
    parser.print_help()
    return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
