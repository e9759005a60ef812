"""Command line: ``ckptlint check``, ``ckptlint rule``, ``ckptlint verify``.

Argument parsing, output and exit codes only; the run itself lives in
:mod:`ckptlint.runner` and the analysis in :mod:`ckptlint.engine`.
Exit status: 0 no findings, 1 findings (or, with ``--diff``, changes to
make), 2 usage, configuration or internal error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Sequence, TextIO

from ckptlint import __version__

__all__ = ["main"]

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_ERROR = 2

FORMATS = ("text", "json", "sarif", "github")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse's own status)
        self.exit(EXIT_ERROR, f"ckptlint: error: {message}\n")


def _codes(value: str) -> list[str]:
    """``--select CKP1,CKP201`` -> ["CKP1", "CKP201"] (validated later, with the config)."""
    return [part.strip() for part in value.split(",") if part.strip()]


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value!r}")
    return n


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ckptlint", description="Find code that breaks PyTorch gradient checkpointing.")
    parser.add_argument("--version", action="version", version=f"ckptlint {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    check = sub.add_parser("check", help="lint files or directories (default: .)")
    check.add_argument("paths", nargs="*", default=["."], help="files or directories to check")

    out = check.add_argument_group("output")
    out.add_argument("--format", "--output-format", dest="format", choices=FORMATS, default="text",
                     help="output format (default: text)")
    out.add_argument("--output-file", "-o", metavar="PATH", help="write the report to PATH instead of stdout")
    out.add_argument("--statistics", action="store_true", help="print the number of findings per rule code instead")
    out.add_argument("--show-suppressed", action="store_true",
                     help="also list findings silenced by noqa / ckptlint: ignore comments")
    out.add_argument("--exit-zero", action="store_true", help="exit 0 even when there are findings")
    out.add_argument("--color", choices=["auto", "always", "never"], default="auto")

    rules = check.add_argument_group("rule selection (command line overrides [tool.ckptlint])")
    rules.add_argument("--select", type=_codes, metavar="CODES",
                       help="comma-separated codes or prefixes to enable (replaces the configured set)")
    rules.add_argument("--extend-select", type=_codes, action="append", default=[], metavar="CODES",
                       help="codes or prefixes to enable in addition")
    rules.add_argument("--ignore", type=_codes, action="append", default=[], metavar="CODES",
                       help="codes or prefixes to disable")

    cfg = check.add_argument_group("configuration")
    cfg.add_argument("--config", metavar="FILE", help="read [tool.ckptlint] from FILE instead of the nearest pyproject.toml")
    cfg.add_argument("--isolated", action="store_true", help="ignore all configuration files")
    cfg.add_argument("--checkpoint-function", action="append", default=[], metavar="QUALNAME",
                     help="extra function that behaves like torch.utils.checkpoint.checkpoint (repeatable)")
    cfg.add_argument("--max-helper-depth", type=int, default=None, metavar="N", help="how deep to follow helper calls")
    cfg.add_argument("--exclude", action="append", default=None, metavar="GLOB",
                     help="skip paths matching GLOB (replaces the configured exclude; repeatable)")
    cfg.add_argument("--extend-exclude", action="append", default=[], metavar="GLOB",
                     help="skip paths matching GLOB in addition (repeatable)")

    sup = check.add_argument_group("suppressions")
    sup.add_argument("--report-unused-ignores", action="store_true",
                     help="report suppression comments that silence nothing (CKP002)")
    sup.add_argument("--honor-bare-noqa", action="store_true",
                     help="let a bare '# noqa' (no codes) silence ckptlint too")

    fix = check.add_argument_group("fixes")
    fix.add_argument("--fix", action="store_true", help="apply safe fixes")
    fix.add_argument("--unsafe-fixes", action="store_true",
                     help="also apply fixes that change behaviour a caller may rely on (implies --fix unless --diff)")
    fix.add_argument("--diff", action="store_true", help="print the fixes as a unified diff; write nothing")

    perf = check.add_argument_group("performance")
    perf.add_argument("--jobs", "-j", type=_positive, default=None, metavar="N",
                      help="worker processes (default: number of CPUs)")
    perf.add_argument("--no-cache", action="store_true", help="neither read nor write .ckptlint_cache/")

    rule = sub.add_parser("rule", help="print a rule's documentation")
    rule.add_argument("code", nargs="?", help="rule code, e.g. CKP101")
    rule.add_argument("--all", action="store_true", help="list every rule")

    sub.add_parser("verify", help="runtime verification (needs the runtime extra)", add_help=False)
    return parser


def _documented_rules() -> tuple[list, dict]:
    """The engine's rules plus CKP002, which lives with the suppressions.

    CKP002 is merged here rather than registered into the engine's registry:
    the engine never emits it, and its rule-case machinery should not see it.
    """
    from ckptlint import suppressions
    from ckptlint.rules import ALL_RULES, RULES_BY_CODE

    rules = sorted({*ALL_RULES, suppressions}, key=lambda m: m.CODE)
    return rules, {**RULES_BY_CODE, suppressions.CODE: suppressions}


def _cmd_rule(args: argparse.Namespace) -> int:
    from ckptlint.rules import rule_doc

    ALL_RULES, RULES_BY_CODE = _documented_rules()
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


def _line_reader() -> Callable[[str, int], str | None]:
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

    return read_line


def _statistics(result: "object", fmt: str, unsafe: bool) -> str:
    from ckptlint.fixes import applicable

    findings = result.findings  # type: ignore[attr-defined]
    counts: dict[str, list[int]] = {}
    unsafe_only = 0
    for f in findings:
        entry = counts.setdefault(f.code, [0, 0])
        entry[0] += 1
        if applicable(f, unsafe=unsafe):
            entry[1] += 1
        elif applicable(f, unsafe=True):
            unsafe_only += 1
    by_code = _documented_rules()[1]
    names = {code: getattr(by_code.get(code), "NAME", "") for code in counts}
    rows = sorted(counts.items(), key=lambda kv: (-kv[1][0], kv[0]))
    if fmt == "json":
        return json.dumps(
            [{"code": c, "name": names.get(c, ""), "count": n, "fixable": fx} for c, (n, fx) in rows], indent=2
        ) + "\n"
    if not rows:
        return "No findings.\n"
    width = max(len(str(n)) for _, (n, _f) in rows)
    lines = [
        f"{n:>{width}}\t{c}\t{'[*] ' if fx else '    '}{names.get(c, '')}" for c, (n, fx) in rows
    ]
    total = sum(n for _, (n, _f) in rows)
    fixable = sum(fx for _, (_n, fx) in rows)
    lines.append(f"Found {total} finding{'s' if total != 1 else ''}.")
    if fixable:
        flag = "--fix" if not unsafe else "--unsafe-fixes"
        lines.append(f"[*] {fixable} fixable with {flag}.")
    if unsafe_only:
        lines.append(f"{unsafe_only} more fixable with --unsafe-fixes (they change behaviour a caller may see).")
    return "\n".join(lines) + "\n"


def _render(args: argparse.Namespace, result: "object", color: bool) -> str:
    from ckptlint.report import format_json, format_text
    from ckptlint.report.json import finding_to_json

    findings = result.findings  # type: ignore[attr-defined]
    suppressed = result.suppressed if args.show_suppressed else []  # type: ignore[attr-defined]
    if args.statistics:
        return _statistics(result, args.format, args.unsafe_fixes)
    if args.format == "json":
        if not suppressed:
            return format_json(findings)
        items = [finding_to_json(f) | {"suppressed": False} for f in findings]
        items += [finding_to_json(f) | {"suppressed": True} for f in suppressed]
        items.sort(key=lambda d: (d["path"], d["line"], d["column"], d["code"]))
        return json.dumps(items, indent=2) + "\n"
    if args.format == "sarif":
        from ckptlint.report import sarif

        return sarif.render(findings, suppressed=suppressed, errors=result.errors)  # type: ignore[attr-defined]
    if args.format == "github":
        from ckptlint.report import github

        # Suppressed findings are deliberately not annotated on pull requests.
        return github.render(findings)
    text = format_text(findings, _line_reader(), color, result.files_checked)  # type: ignore[attr-defined]
    if suppressed:
        lines = [f"\nSuppressed ({len(suppressed)}):"]
        lines += [f"{f.path}:{f.line}:{f.column + 1}: {f.code} {f.message}" for f in suppressed]
        text += "\n".join(lines) + "\n"
    return text


def _progress(stream: TextIO) -> Callable[[int, int], None] | None:
    """A one-line progress counter on a terminal, for long runs only."""
    if not stream.isatty():
        return None

    def show(done: int, total: int) -> None:
        if total < 200:
            return
        if done == total:
            stream.write("\r\x1b[K")
        elif done % 10 == 0:
            stream.write(f"\rckptlint: {done}/{total} files analysed")
        stream.flush()

    return show


def _cmd_check(args: argparse.Namespace) -> int:
    from ckptlint.config import ConfigError, load_config
    from ckptlint.runner import RunSettings, run

    for p in args.paths:
        if not os.path.exists(p):
            print(f"ckptlint: error: path {p!r} does not exist", file=sys.stderr)
            return EXIT_ERROR
    if args.config and args.isolated:
        print("ckptlint: error: --config and --isolated exclude each other", file=sys.stderr)
        return EXIT_ERROR
    try:
        config = load_config(args.paths, config_file=args.config, isolated=args.isolated)
        config = config.with_cli(
            select=args.select,
            extend_select=[c for group in args.extend_select for c in group],
            ignore=[c for group in args.ignore for c in group],
            exclude=args.exclude,
            extend_exclude=args.extend_exclude,
            checkpoint_functions=args.checkpoint_function,
            max_helper_depth=args.max_helper_depth,
        )
    except ConfigError as exc:
        print(f"ckptlint: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    fixing = args.fix or args.unsafe_fixes
    settings = RunSettings(
        config=config,
        jobs=args.jobs,
        use_cache=not args.no_cache,
        honor_bare_noqa=args.honor_bare_noqa,
        report_unused_ignores=args.report_unused_ignores,
        show_suppressed=args.show_suppressed,
        fix=fixing and not args.diff,
        unsafe_fixes=args.unsafe_fixes,
        diff=args.diff,
        progress=_progress(sys.stderr),
    )
    result = run(args.paths, settings)
    for line in result.warnings:
        print(f"ckptlint: warning: {line}", file=sys.stderr)
    for path, error in result.errors:
        if "\n" in error.strip():
            print(f"ckptlint: internal error while checking {path}:\n{error}", file=sys.stderr)
        else:  # a file or folder that cannot be read: one line, no traceback
            print(f"ckptlint: error: {path}: {error}", file=sys.stderr)
    report = result.fixes
    if report is not None:
        for path, why in report.failures:
            print(f"ckptlint: {path}: {why}", file=sys.stderr)

    if args.diff:
        assert report is not None
        sys.stdout.write("".join(report.diffs))
        n = len({f.fix for f in report.applied})
        print(
            f"Would fix {n} finding{'s' if n != 1 else ''} in {len(report.changed_files)} "
            f"file{'s' if len(report.changed_files) != 1 else ''} ({len(result.findings)} would remain).",
            file=sys.stderr,
        )
        if result.errors:
            return EXIT_ERROR
        return EXIT_FINDINGS if (report.diffs or result.findings) and not args.exit_zero else EXIT_OK

    to_file = args.output_file is not None
    stream = sys.stdout
    color = (
        not to_file
        and args.format == "text"
        and (args.color == "always" or (args.color == "auto" and stream.isatty() and not os.environ.get("NO_COLOR")))
    )
    text = _render(args, result, color)
    if report is not None:
        n = len({f.fix for f in report.applied})
        summary = (
            f"Fixed {n} finding{'s' if n != 1 else ''} in {len(report.changed_files)} "
            f"file{'s' if len(report.changed_files) != 1 else ''}."
        )
        if args.format == "text" and not args.statistics and not to_file:
            text += summary + "\n"
        else:
            print(summary, file=sys.stderr)
    if to_file:
        try:
            _write_report(args.output_file, text)
        except OSError as exc:
            print(f"ckptlint: error: cannot write --output-file {args.output_file!r}: {exc.strerror}", file=sys.stderr)
            return EXIT_ERROR
    else:
        stream.write(text)
    if result.errors:
        return EXIT_ERROR
    if result.findings and not args.exit_zero:
        return EXIT_FINDINGS
    return EXIT_OK


def _write_report(path: str, text: str) -> None:
    """Write ``--output-file`` atomically: the old report stays whole until the new one is."""
    import tempfile

    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # Encoded before anything is opened; surrogateescape writes a non-UTF-8
    # file name's own bytes rather than failing half-way.
    data = text.encode("utf-8", errors="surrogateescape")
    try:
        mode = os.stat(path).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(prefix=".ckptlint-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _missing_runtime(exc: ImportError) -> bool:
    missing = (getattr(exc, "name", None) or "").split(".")[0]
    return missing in ("torch", "hypothesis", "numpy") or missing == ""


def _cmd_verify(argv: Sequence[str]) -> int:
    # runtime_checks imports torch lazily, so a missing runtime extra can
    # surface at import time or only once the command runs.
    message = "ckptlint verify needs the runtime extra: pip install 'ckptlint[runtime]'"
    try:
        import runtime_checks.cli as runtime_cli
    except ImportError as exc:
        if _missing_runtime(exc):
            print(message, file=sys.stderr)
            return EXIT_ERROR
        raise
    try:
        return int(runtime_cli.main(list(argv)))
    except ImportError as exc:
        if _missing_runtime(exc):
            print(message, file=sys.stderr)
            return EXIT_ERROR
        raise


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
