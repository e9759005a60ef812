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

__all__ = ["GitIgnore", "Listing", "display_path", "glob_to_regex", "iter_python_files", "list_python_files"]

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
            # As in git's wildmatch, a "]" right after "[" (or "[!") is literal.
            first = i + 2 if glob.startswith("[!", i) else i + 1
            j = glob.find("]", first + 1 if glob[first : first + 1] == "]" else first)
            if j == -1:
                out.append(re.escape(c))
            else:
                body = glob[i + 1 : j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                cls = "[" + body.replace("\\", "\\\\").replace("[", "\\[") + "]"
                try:
                    re.compile(cls)
                except re.error as exc:  # a reversed range such as [z-a]
                    raise ValueError(f"invalid character class {glob[i : j + 1]!r} ({exc})") from None
                out.append(cls)
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
        # Patterns git would not match anything with: skipped, with why.
        self.warnings: list[str] = []
        for number, raw in enumerate(lines, 1):
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
            try:
                body = glob_to_regex(line)
            except ValueError as exc:
                shown = display_path(str(base / ".gitignore"))
                self.warnings.append(f"{shown}:{number}: pattern {raw.strip()!r} ignored: {exc}")
                continue
            prefix = "" if anchored else "(?:.*/)?"
            # A matched directory also excludes everything below it.
            regex = re.compile("^" + prefix + body + "(?:/.*)?$" if not dir_only else "^" + prefix + body + "$")
            self.patterns.append(_Pattern(regex, negated, dir_only))

    @classmethod
    def load(cls, directory: Path, warnings: list[str] | None = None) -> GitIgnore | None:
        path = directory / ".gitignore"
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
        ignore = cls(directory, text.splitlines())
        if warnings is not None:
            warnings.extend(ignore.warnings)
        return ignore

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
    try:
        return os.path.isfile(directory / "pyvenv.cfg")
    except OSError:  # pragma: no cover - isfile swallows OSError; kept for odd filesystems
        return False


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


@dataclass
class Listing:
    """The Python files under some paths, and what could not be listed."""

    files: list[str]
    # (path, why): folders that cannot be read; their files are unchecked.
    problems: list[tuple[str, str]]
    # Lines for stderr: .gitignore patterns skipped (git skips them too).
    warnings: list[str]


@dataclass
class _Walk:
    exclude: Sequence[str]
    out: list[Path]
    problems: list[tuple[str, str]]
    warnings: list[str]
    # Resolved folders already walked: a symlink to one of them (``ln -s .
    # pkg/self``) adds nothing, so each folder is walked once and loops end.
    seen: set[str]
    # Symlinked folders, walked after every real folder so that a file keeps
    # its real path whenever it has one inside the roots.
    links: list[tuple[Path, list[GitIgnore]]]


def _walk(directory: Path, ignores: list[GitIgnore], state: _Walk) -> None:
    state.seen.add(os.path.realpath(directory))
    own = GitIgnore.load(directory, state.warnings)
    if own is not None:
        ignores = [*ignores, own]
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as exc:
        state.problems.append((str(directory), f"cannot read directory: {exc.strerror or exc}"))
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
            if _ignored(ignores, path, True) or _matches_exclude(path, state.exclude):
                continue
            try:
                linked = entry.is_symlink()
            except OSError:
                continue
            if linked:
                state.links.append((path, ignores))
            elif os.path.realpath(path) not in state.seen:
                _walk(path, ignores, state)
        elif entry.name.endswith(PYTHON_SUFFIXES):
            if _ignored(ignores, path, False) or _matches_exclude(path, state.exclude):
                continue
            state.out.append(path)


def _walk_links(state: _Walk) -> None:
    while state.links:
        path, ignores = state.links.pop(0)
        if os.path.realpath(path) not in state.seen:
            _walk(path, ignores, state)


def list_python_files(paths: Sequence[str], exclude: Sequence[str] = ()) -> Listing:
    """Python files under ``paths``, sorted, each file once, with what could not be read.

    Directories are searched recursively, skipping VCS folders, virtualenvs,
    ``build/``, caches and anything ``.gitignore`` excludes; a symlink to a
    folder is followed only if that folder (by resolved path) is not walked
    otherwise. A file named explicitly is always included. A file reached by
    several paths (symlinks) is listed once, by the path without links when
    there is one. ``exclude`` holds extra glob patterns matched against the
    path and each of its components.
    """
    found: list[Path] = []
    state = _Walk(exclude, [], [], [], set(), [])
    roots: list[tuple[Path, Path]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            # Walk absolute paths so that ignore files above the start directory
            # compare against the same form, then hand back paths as given.
            base = Path(os.path.abspath(path))
            roots.append((path, base))
            state.out = []
            inherited = _inherited_ignores(base)
            if _ignored(inherited, base, True):
                # A folder named explicitly is checked even if an enclosing repo
                # ignores it (pyenv's .gitignore holds /versions: the stdlib).
                inherited = []
            if os.path.realpath(base) not in state.seen:
                _walk(base, inherited, state)
            _walk_links(state)
            found.extend(path / p.relative_to(base) for p in state.out)
        else:
            found.append(path)
    seen: dict[str, str] = {}
    for p in found:
        key = os.path.normpath(str(p))
        real = os.path.realpath(key)
        current = seen.get(real)
        if current is None or (_through_link(current) and not _through_link(key)):
            seen[real] = key
    result = sorted(set(seen.values()), key=lambda s: display_path(s))
    return Listing(result, sorted(state.problems), state.warnings)


def _through_link(path: str) -> bool:
    """Whether ``path`` passes through a symlink (its resolved form differs)."""
    return os.path.realpath(path) != os.path.abspath(path)


def iter_python_files(paths: Sequence[str], exclude: Sequence[str] = ()) -> list[str]:
    """The files of :func:`list_python_files` (problems and warnings dropped)."""
    return list_python_files(paths, exclude).files


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
