"""``ckptlint check``: from parsed arguments to the report and the exit status.

Reads stdin or lists the paths, loads the configuration, runs the linter
(:mod:`ckptlint.runner`) and writes what :mod:`ckptlint.cli_output` renders,
the fixed source or the diff; ``--output-file`` is written atomically.
"""

from __future__ import annotations

import argparse
import os
import sys

from ckptlint.cli_args import EXIT_ERROR, EXIT_FINDINGS, EXIT_OK
from ckptlint.cli_output import progress as _progress
from ckptlint.cli_output import render as _render

__all__ = ["cmd_check"]


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


def cmd_check(args: argparse.Namespace) -> int:
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
