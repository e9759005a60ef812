"""Command line: ``ckptlint check``, ``ckptlint rule``, ``ckptlint verify``.

Argument parsing and exit codes only; the analysis lives in ``engine``.
Exit status: 0 no findings, 1 findings, 2 usage or internal error.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from ckptlint import __version__

__all__ = ["main"]

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_ERROR = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse's own status)
        self.exit(EXIT_ERROR, f"ckptlint: error: {message}\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ckptlint", description="Find code that breaks PyTorch gradient checkpointing.")
    parser.add_argument("--version", action="version", version=f"ckptlint {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    check = sub.add_parser("check", help="lint files or directories (default: .)")
    check.add_argument("paths", nargs="*", default=["."], help="files or directories to check")
    check.add_argument("--format", choices=["text", "json"], default="text", help="output format")
    check.add_argument("--exit-zero", action="store_true", help="exit 0 even when there are findings")
    check.add_argument(
        "--checkpoint-function", action="append", default=[], metavar="QUALNAME",
        help="extra function that behaves like torch.utils.checkpoint.checkpoint (repeatable)",
    )
    check.add_argument("--max-helper-depth", type=int, default=3, metavar="N", help="how deep to follow helper calls")
    check.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="skip paths matching GLOB")
    check.add_argument("--color", choices=["auto", "always", "never"], default="auto")

    rule = sub.add_parser("rule", help="print a rule's documentation")
    rule.add_argument("code", nargs="?", help="rule code, e.g. CKP101")
    rule.add_argument("--all", action="store_true", help="list every rule")

    sub.add_parser("verify", help="runtime verification (needs the runtime extra)", add_help=False)
    return parser


def _cmd_rule(args: argparse.Namespace) -> int:
    from ckptlint.rules import ALL_RULES, RULES_BY_CODE, rule_doc

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


def _cmd_check(args: argparse.Namespace) -> int:
    from ckptlint.engine import EngineOptions, lint
    from ckptlint.report import format_json, format_text

    for p in args.paths:
        if not os.path.exists(p):
            print(f"ckptlint: error: path {p!r} does not exist", file=sys.stderr)
            return EXIT_ERROR
    if args.max_helper_depth < 0:
        print(f"ckptlint: error: --max-helper-depth must be >= 0, got {args.max_helper_depth!r}", file=sys.stderr)
        return EXIT_ERROR
    options = EngineOptions(tuple(args.checkpoint_function), args.max_helper_depth)
    result = lint(args.paths, options, tuple(args.exclude))
    for path, error in result.errors:
        print(f"ckptlint: internal error while checking {path}:\n{error}", file=sys.stderr)
    if args.format == "json":
        sys.stdout.write(format_json(result.findings))
    else:
        color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty() and not os.environ.get("NO_COLOR"))
        cache: dict[str, list[str]] = {}

        def read_line(path: str, line: int) -> str | None:
            if path not in cache:
                try:
                    with open(path, encoding="utf-8", errors="replace") as fh:
                        cache[path] = fh.read().splitlines()
                except OSError:
                    cache[path] = []
            lines = cache[path]
            return lines[line - 1] if 0 < line <= len(lines) else None

        sys.stdout.write(format_text(result.findings, read_line, color, result.files_checked))
    if result.errors:
        return EXIT_ERROR
    if result.findings and not args.exit_zero:
        return EXIT_FINDINGS
    return EXIT_OK


def _cmd_verify(argv: Sequence[str]) -> int:
    try:
        import runtime_checks.cli as runtime_cli
    except ImportError as exc:
        missing = (getattr(exc, "name", None) or "").split(".")[0]
        if missing in ("torch", "hypothesis", "numpy") or missing == "":
            print("ckptlint verify needs the runtime extra: pip install 'ckptlint[runtime]'", file=sys.stderr)
            return EXIT_ERROR
        raise
    return int(runtime_cli.main(list(argv)))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ckptlint`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "verify":
        return _cmd_verify(argv[1:])
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "rule":
            return _cmd_rule(args)
        if args.command == "check":
            return _cmd_check(args)
    except KeyboardInterrupt:
        return EXIT_ERROR
    parser.print_help()
    return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
