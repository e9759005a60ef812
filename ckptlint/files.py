"""Which files to check: directory recursion, default skips and ``.gitignore``.

The linter may only depend on libcst, so ``.gitignore`` matching is a small
gitwildmatch implementation here instead of ``pathspec``. Paths the user names
explicitly are always checked, whatever the ignore rules say.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["GitIgnore", "display_path", "glob_to_regex", "iter_python_files"]

# Directory names never worth descending into. Virtualenvs with other names are
# recognised by their ``pyvenv.cfg``.
SKIP_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        ".venv",
        "venv",
        "build",
        "__pycache__",
        ".tox",
        ".nox",
        "node_modules",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".ckptlint_cache",
        ".eggs",
    }
)
PYTHON_SUFFIXES = (".py", ".pyi")


@dataclass(frozen=True)
class _Pattern:
    regex: re.Pattern[str]
    negated: bool
    dir_only: bool


def glob_to_regex(glob: str) -> str:
    """Translate a gitwildmatch glob (no leading slash) to a regex body.

    ``*`` and ``?`` stay inside one path segment, ``**`` at a segment's start
    crosses segments, ``[...]`` is a character class, ``\\`` escapes. Used for
    ``.gitignore`` files and for the ``exclude``/``per-file-ignores`` settings.
    """
    out: list[str] = []
    i = 0
    n = len(glob)
    while i < n:
        c = glob[i]
        if c == "*":
            if glob.startswith("**", i):
                # "**/" matches zero or more directories, "/**" everything below.
                at_start = i == 0 or glob[i - 1] == "/"
                after = glob[i + 2 : i + 3]
                if at_start and after == "/":
                    out.append("(?:.*/)?")
                    i += 3
                    continue
                if at_start and after == "":
                    out.append(".*")
                    i += 2
                    continue
                out.append("[^/]*")
                i += 2
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = glob.find("]", i + 1)
            if j == -1:
                out.append(re.escape(c))
            else:
                body = glob[i + 1 : j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = j
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(glob[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


class GitIgnore:
    """The patterns of one ``.gitignore`` file, relative to its directory."""

    def __init__(self, base: Path, lines: Iterable[str]) -> None:
        self.base = base
        self.patterns: list[_Pattern] = []
        for raw in lines:
            line = raw.rstrip("\n").rstrip("\r")
            # Trailing spaces are ignored unless escaped.
            stripped = line.rstrip(" ")
            if stripped.endswith("\\") and line != stripped:
                stripped += " "
            line = stripped
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            if negated:
                line = line[1:]
            elif line.startswith("\\"):
                line = line[1:]
            dir_only = line.endswith("/")
            line = line.rstrip("/")
            if not line:
                continue
            anchored = "/" in line
            line = line.lstrip("/")
            body = glob_to_regex(line)
            prefix = "" if anchored else "(?:.*/)?"
            # A matched directory also excludes everything below it.
            regex = re.compile("^" + prefix + body + "(?:/.*)?$" if not dir_only else "^" + prefix + body + "$")
            self.patterns.append(_Pattern(regex, negated, dir_only))

    @classmethod
    def load(cls, directory: Path) -> GitIgnore | None:
        path = directory / ".gitignore"
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
        return cls(directory, text.splitlines())

    def match(self, path: Path, is_dir: bool) -> bool | None:
        """True if ignored, False if re-included, None if no pattern speaks."""
        try:
            rel = path.relative_to(self.base).as_posix()
        except ValueError:
            return None
        result: bool | None = None
        for pattern in self.patterns:
            if pattern.dir_only and not is_dir:
                # "dir/" patterns only name directories; files below a matched
                # directory are never reached because recursion stops there.
                continue
            if pattern.regex.match(rel):
                result = not pattern.negated
        return result


def _is_venv(directory: Path) -> bool:
    return (directory / "pyvenv.cfg").is_file()


def _git_root(start: Path) -> Path | None:
    for candidate in (start, *start.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


def _inherited_ignores(directory: Path) -> list[GitIgnore]:
    """``.gitignore`` files from the enclosing git root down to ``directory``."""
    root = _git_root(directory)
    if root is None:
        return []
    chain = [directory, *directory.parents]
    chain = chain[: chain.index(root) + 1] if root in chain else [directory]
    ignores: list[GitIgnore] = []
    for d in reversed(chain[1:]):  # the directory itself is loaded by the walk
        gi = GitIgnore.load(d)
        if gi is not None:
            ignores.append(gi)
    return ignores


def _ignored(ignores: Sequence[GitIgnore], path: Path, is_dir: bool) -> bool:
    verdict = False
    for gi in ignores:
        m = gi.match(path, is_dir)
        if m is not None:
            verdict = m
    return verdict


def _matches_exclude(path: Path, exclude: Sequence[str]) -> bool:
    if not exclude:
        return False
    posix = display_path(str(path))
    parts = Path(posix).parts
    for pattern in exclude:
        pat = pattern.rstrip("/")
        if fnmatch.fnmatch(posix, pat) or fnmatch.fnmatch(path.name, pat):
            return True
        if "/" not in pat and any(fnmatch.fnmatch(p, pat) for p in parts):
            return True
        if fnmatch.fnmatch(posix, "*/" + pat):
            return True
    return False


def _walk(directory: Path, ignores: list[GitIgnore], exclude: Sequence[str], out: list[Path]) -> None:
    own = GitIgnore.load(directory)
    if own is not None:
        ignores = [*ignores, own]
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        path = Path(entry.path)
        try:
            is_dir = entry.is_dir()
        except OSError:
            continue
        if is_dir:
            if entry.name in SKIP_DIRS or _is_venv(path):
                continue
            if _ignored(ignores, path, True) or _matches_exclude(path, exclude):
                continue
            _walk(path, ignores, exclude, out)
        elif entry.name.endswith(PYTHON_SUFFIXES):
            if _ignored(ignores, path, False) or _matches_exclude(path, exclude):
                continue
            out.append(path)


def iter_python_files(paths: Sequence[str], exclude: Sequence[str] = ()) -> list[str]:
    """Python files under ``paths``, sorted, without duplicates.

    Directories are searched recursively, skipping VCS folders, virtualenvs,
    ``build/``, caches and anything ``.gitignore`` excludes. A file named
    explicitly is always included. ``exclude`` holds extra glob patterns
    matched against the path and each of its components.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            # Walk absolute paths so that ignore files above the start directory
            # compare against the same form, then hand back paths as given.
            base = Path(os.path.abspath(path))
            below: list[Path] = []
            _walk(base, _inherited_ignores(base), exclude, below)
            found.extend(path / p.relative_to(base) for p in below)
        else:
            found.append(path)
    seen: set[str] = set()
    result: list[str] = []
    for p in found:
        key = os.path.normpath(str(p))
        if key not in seen:
            seen.add(key)
            result.append(key)
    return sorted(result, key=lambda s: display_path(s))


def display_path(path: str) -> str:
    """Relative to the working directory when under it, else as given; ``/`` separators."""
    p = os.path.normpath(path)
    if os.path.isabs(p):
        try:
            rel = os.path.relpath(p, os.getcwd())
        except ValueError:
            rel = p
        if not rel.startswith(".."):
            p = rel
    else:
        ap = os.path.abspath(p)
        rel = os.path.relpath(ap, os.getcwd())
        p = rel if not rel.startswith("..") else p
    return p.replace(os.sep, "/")
