"""The command line's vocabulary: the argument parser of every subcommand, and
the exit statuses that the parser and the commands return.

Exit status: 0 no findings, 1 findings (or, with ``--diff``, changes to
make), 2 usage, configuration or internal error, 130 interrupted (Ctrl-C).
A usage error is one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import os

from ckptlint import __version__

__all__ = ["EXIT_ERROR", "EXIT_FINDINGS", "EXIT_INTERRUPTED", "EXIT_OK", "FORMATS", "build_parser"]

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


def build_parser() -> argparse.ArgumentParser:
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
