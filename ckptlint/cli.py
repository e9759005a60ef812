"""Command line: ``ckptlint check``, ``rule``, ``clean``, ``server``, ``verify``.

Argument parsing, output and exit codes only; the run itself lives in
:mod:`ckptlint.runner` and the analysis in :mod:`ckptlint.engine`.
Exit status: 0 no findings, 1 findings (or, with ``--diff``, changes to
make), 2 usage, configuration or internal error, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

from ckptlint import __version__
from ckptlint.cli_output import documented_rules as _documented_rules
from ckptlint.cli_output import progress as _progress
from ckptlint.cli_output import render as _render

__all__ = ["main"]

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

# "text" is the old name of "full" and stays accepted.
FORMATS = ("full", "concise", "text", "json", "sarif", "github")


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
    parser.add_argument("-V", "--version", action="version", version=f"ckptlint {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    check = sub.add_parser("check", help="lint files or directories (default: .)")
    check.add_argument("paths", nargs="*", default=None, help="files or directories to check; '-' reads stdin")

    out = check.add_argument_group("output")
    out.add_argument("--output-format", "--format", dest="format", choices=FORMATS, default="full",
                     help="output format (default: full; concise is one line per finding; text = full)")
    out.add_argument("-q", "--quiet", action="store_true", help="print findings and nothing else (no summary, hints or warnings)")
    out.add_argument("-s", "--silent", action="store_true",
                     help="print nothing; the exit status still says whether there were findings")
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
    cfg.add_argument("--stdin-filename", metavar="PATH",
                     help="the path of the source read from stdin ('-'): used for configuration, "
                          "per-file-ignores, the file's package and the reported path")
    cfg.add_argument("--show-settings", action="store_true", help="print the resolved settings and exit")
    cfg.add_argument("--show-files", action="store_true", help="print the files that would be checked and exit")
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
    perf.add_argument("--cache-dir", metavar="DIR", default=os.environ.get("CKPTLINT_CACHE_DIR") or None,
                      help="where the cache lives (default: .ckptlint_cache/ in the project root; env CKPTLINT_CACHE_DIR)")

    clean = sub.add_parser("clean", help="remove the cache folder of the project(s) at PATHS")
    clean.add_argument("paths", nargs="*", default=["."], help="where to look for the configuration (default: .)")
    clean.add_argument("--cache-dir", metavar="DIR", default=os.environ.get("CKPTLINT_CACHE_DIR") or None,
                       help="remove this cache folder instead (env CKPTLINT_CACHE_DIR)")
    clean.add_argument("-q", "--quiet", action="store_true", help="say nothing")

    rule = sub.add_parser("rule", help="print a rule's documentation")
    rule.add_argument("code", nargs="?", help="rule code, e.g. CKP101")
    rule.add_argument("--all", action="store_true", help="list every rule")
    rule.add_argument("--output-format", dest="format", choices=["text", "json"], default="text")

    sub.add_parser("server", help="run the language server on stdin/stdout (needs the lsp extra)")
    sub.add_parser("verify", help="runtime verification (needs the runtime extra)", add_help=False)
    sub.add_parser("profile", help="per-region activation memory and recompute time (runtime extra)", add_help=False)
    sub.add_parser("plan", help="regions to checkpoint under a memory budget (plan extra)", add_help=False)
    return parser


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


def _fix_stdin(args: argparse.Namespace, settings: "object", sources: dict[str, str]) -> int:
    """``check - --fix``: the fixed source on stdout (as ruff), the report on stderr;
    with ``--diff``, the diff on stdout. Nothing is written."""
    from ckptlint.cli_support import fix_in_memory
    from ckptlint.files import display_path
    from ckptlint.fixes import unified_diff

    ((name, original),) = sources.items()
    text, result, n = fix_in_memory(name, original, settings, unsafe=args.unsafe_fixes)  # type: ignore[arg-type]
    for path, error in result.errors:
        print(f"ckptlint: internal error while checking {path}:\n{error}", file=sys.stderr)
    if args.diff:
        if not args.silent and text != original:
            sys.stdout.write(unified_diff(display_path(name), original, text))
    else:
        sys.stdout.write(text)
    if not args.silent:
        report = _render(args, result, False, {display_path(name): text})
        if not args.quiet:
            verb = "Would fix" if args.diff else "Fixed"
            report += f"{verb} {n} finding{'s' if n != 1 else ''}.\n"
        sys.stderr.write(report)
    if result.errors:
        return EXIT_ERROR
    changed = args.diff and text != original
    return EXIT_FINDINGS if (result.findings or changed) and not args.exit_zero else EXIT_OK


def _stdin_mode(args: argparse.Namespace) -> bool:
    """``check -``, or ``--stdin-filename`` with no paths (as ruff reads stdin then)."""
    return args.paths == ["-"] or (args.paths is None and args.stdin_filename is not None)


def _cmd_check(args: argparse.Namespace) -> int:
    from ckptlint.cli_support import read_stdin, show_files, show_settings
    from ckptlint.config import ConfigError, load_config
    from ckptlint.runner import RunSettings, list_files, run

    args.quiet = args.quiet or args.silent
    if args.format == "text":
        args.format = "full"
    stdin = _stdin_mode(args)
    if args.paths is None:
        args.paths = ["."]
    if "-" in args.paths and not stdin:
        print("ckptlint: error: '-' (stdin) cannot be combined with other paths", file=sys.stderr)
        return EXIT_ERROR
    sources: dict[str, str] = {}
    if stdin:
        name = args.stdin_filename or "-"
        sources[name] = read_stdin()
        # The configuration is found from where the file would live.
        args.paths = []
        config_start = [name if name != "-" else "."]
    else:
        for p in args.paths:
            if not os.path.exists(p):
                print(f"ckptlint: error: path {p!r} does not exist", file=sys.stderr)
                return EXIT_ERROR
        config_start = args.paths
    if args.config and args.isolated:
        print("ckptlint: error: --config and --isolated exclude each other", file=sys.stderr)
        return EXIT_ERROR
    try:
        config = load_config(config_start, config_file=args.config, isolated=args.isolated)
        config = config.with_cli(
            select=args.select,
            extend_select=[c for group in args.extend_select for c in group],
            ignore=[c for group in args.ignore for c in group],
            exclude=args.exclude,
            extend_exclude=args.extend_exclude,
            checkpoint_functions=args.checkpoint_function,
            max_helper_depth=args.max_helper_depth,
            cache_dir=args.cache_dir,
        )
    except ConfigError as exc:
        print(f"ckptlint: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.show_settings:
        show_settings(config, config_start[0], sys.stdout)
        return EXIT_OK
    if args.show_files:
        show_files(sorted({*list_files(args.paths, config).files, *sources}) if args.paths else sorted(sources), sys.stdout)
        return EXIT_OK
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
        progress=None if args.quiet else _progress(sys.stderr),
        sources=sources,
    )
    if stdin and (fixing or args.diff):
        return _fix_stdin(args, settings, sources)
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
        if not args.silent:
            sys.stdout.write("".join(report.diffs))
        n = len({f.fix for f in report.applied})
        if not args.quiet:
            print(
                f"Would fix {n} finding{'s' if n != 1 else ''} in {len(report.changed_files)} "
                f"file{'s' if len(report.changed_files) != 1 else ''} ({len(result.findings)} would remain).",
                file=sys.stderr,
            )
        if result.errors:
            return EXIT_ERROR
        return EXIT_FINDINGS if (report.diffs or result.findings) and not args.exit_zero else EXIT_OK

    from ckptlint.cli_support import use_color
    from ckptlint.files import display_path

    to_file = args.output_file is not None
    stream = sys.stdout
    shown = {display_path(k): v for k, v in sources.items()}
    color = not to_file and args.format == "full" and use_color(args.color, stream)
    text = _render(args, result, color, shown)
    if result.files_checked == 0:
        # As ruff: a warning, exit 0 (a mistyped path that exists but holds no Python);
        # stdin whose --stdin-filename is excluded is silently not checked.
        if not args.quiet and not stdin:
            print(f"ckptlint: warning: no Python files found under {' '.join(map(repr, args.paths))}", file=sys.stderr)
        if args.format in ("full", "concise") and not args.statistics:
            text = ""
    if report is not None:
        n = len({f.fix for f in report.applied})
        summary = (
            f"Fixed {n} finding{'s' if n != 1 else ''} in {len(report.changed_files)} "
            f"file{'s' if len(report.changed_files) != 1 else ''}."
        )
        unsafe_only = sum(1 for f in result.findings if f.fix is not None and f.fix.edits and f.fix.applicability == "unsafe")
        if unsafe_only and not args.unsafe_fixes:
            summary += (
                f" {unsafe_only} finding{'s have' if unsafe_only != 1 else ' has'} only an unsafe fix"
                " (it changes behaviour a caller may see): rerun with --unsafe-fixes to apply."
            )
        if args.quiet:
            pass
        elif args.format in ("full", "concise") and not args.statistics and not to_file:
            text += summary + "\n"
        else:
            print(summary, file=sys.stderr)
    if args.silent and not to_file:
        text = ""
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
    from ckptlint.atomic import replace_atomically

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
    replace_atomically(path, data, mode=mode)


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
