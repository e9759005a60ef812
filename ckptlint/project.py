"""The checked tree: files, module names, parsed modules and name resolution.

A :class:`Project` knows every file being checked and the dotted module name
of each, parses a file only when something needs it, and resolves names the
way Python's import system would: ``import torch.utils.checkpoint as cp`` makes
``cp.checkpoint`` resolve to ``torch.utils.checkpoint.checkpoint``, and
``from .blocks import Block`` resolves to the ``Block`` class in the sibling
file. Resolution is import-table based rather than libcst's
``QualifiedNameProvider``: measured on transformers, the provider costs ~7x a
parse per file, and the linter must stay within a few times ruff's runtime.
A local binding (parameter, assignment) of the same name shadows an import;
the function analysis handles that by consulting its own scope first.

The lookup itself lives in :mod:`ckptlint.project_lookup` (a mixin of
:class:`Project`), the records it answers with in :mod:`ckptlint.project_types`;
both are importable from here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ckptlint.project_lookup import NameLookup
from ckptlint.project_types import ClassInfo, FunctionInfo
from ckptlint.sourcemodule import DEFAULT_MAX_NESTING, ModuleInfo
from ckptlint.sourcetext import decode_source, dotted_name, max_nesting, parse_python, strict_decode

__all__ = [
    "DEFAULT_MAX_NESTING",
    "ClassInfo",
    "FunctionInfo",
    "ModuleInfo",
    "Project",
    "decode_source",
    "dotted_name",
    "max_nesting",
    "strict_decode",
]


def _module_name_for(path: str) -> tuple[str, str, bool]:
    """(dotted module name, root directory, is_package) from ``__init__.py`` files."""
    p = Path(os.path.abspath(path))
    is_package = p.name == "__init__.py"
    parts: list[str] = [] if is_package else [p.stem]
    d = p.parent
    while (d / "__init__.py").is_file() and d.parent != d:
        parts.append(d.name)
        d = d.parent
    if not parts:
        parts = [p.parent.name or "__init__"]
        d = p.parent.parent
    return ".".join(reversed(parts)), str(d), is_package


class Project(NameLookup):
    """The set of files being checked, with parse-on-demand and name lookup."""

    def __init__(
        self, files: Iterable[str], sources: dict[str, str] | None = None, *, max_nesting: int = DEFAULT_MAX_NESTING
    ) -> None:
        self.files: list[str] = sorted(os.path.normpath(f) for f in files)
        self.max_nesting = max_nesting
        self._sources: dict[str, str] = {}
        self._decode_errors: dict[str, SyntaxError] = {}
        # Texts passed in (e.g. fixed sources for --diff) win over the disk and are never trimmed.
        self._given = {os.path.normpath(k): v for k, v in (sources or {}).items()}
        self._modules: dict[str, ModuleInfo] = {}  # insertion order = recency of use
        self._by_name: dict[str, list[tuple[str, str]]] = {}  # module name -> [(path, root)]
        self._names: dict[str, tuple[str, str, bool]] = {}
        for f in self.files:
            name, root, is_pkg = _module_name_for(f)
            self._names[f] = (name, root, is_pkg)
            self._by_name.setdefault(name, []).append((f, root))
        self._classes: dict[str, ClassInfo | None] = {}
        self._functions: dict[str, FunctionInfo | None] = {}
        self._tracking: set[str] | None = None
        # (module name, root) -> (path, candidate paths probed on the way)
        self._found: dict[tuple[str, str], tuple[str | None, tuple[str, ...]]] = {}
        # Per-run memo for derived facts (keyed by path inside each table).
        self.cache: dict[str, dict[str, object]] = {}

    # -- dependency tracking (what one file's analysis read) ---------------------

    def start_tracking(self) -> None:
        self._tracking = set()

    def stop_tracking(self) -> set[str]:
        accessed = self._tracking or set()
        self._tracking = None
        return accessed

    def depends_on(self, paths: Iterable[str]) -> None:
        """Record that the analysis being tracked read these files' text (without parsing them)."""
        if self._tracking is not None:
            self._tracking.update(os.path.normpath(p) for p in paths)

    @staticmethod
    def normalize(path: str) -> str:
        return os.path.normpath(path)

    def module_name(self, path: str) -> str:
        path = os.path.normpath(path)
        if path not in self._names:
            self._names[path] = _module_name_for(path)
        return self._names[path][0]

    # -- files and modules -------------------------------------------------------

    def read(self, path: str) -> str:
        """Source text: given to the constructor, else read and decoded per PEP 263."""
        path = os.path.normpath(path)
        given = self._given.get(path)
        if given is not None:
            return given
        if path not in self._sources:
            with open(path, "rb") as fh:
                data = fh.read()
            try:
                self._sources[path] = strict_decode(data)
            except SyntaxError as exc:
                # Analysed as text all the same (with replacement characters),
                # but the module reports what Python's compiler would.
                self._decode_errors[path] = exc
                self._sources[path] = data.decode("utf-8", errors="replace")
        return self._sources[path]

    def peek(self, path: str) -> str:
        """Source text for a quick scan of every file (registries, monkeypatches): not kept in memory
        unless it already was — a whole tree's text would double a worker's footprint."""
        path = os.path.normpath(path)
        known = self._given.get(path)
        if known is None:
            known = self._sources.get(path)
        if known is not None:
            return known
        with open(path, "rb") as fh:
            return fh.read().decode("utf-8", errors="replace")

    def parses(self, path: str) -> bool:
        """Whether Python decodes and parses ``path``, keeping nothing of it: the syntax check of a
        file no analysis reads (a parsed module costs its ast walk and stays in memory until trimmed)."""
        path = os.path.normpath(path)
        loaded = self._modules.get(path)
        if loaded is not None:
            return loaded.parse_error is None
        if path in self._decode_errors:
            return False
        text = self._given.get(path, self._sources.get(path))
        try:
            if text is None:
                with open(path, "rb") as fh:
                    text = strict_decode(fh.read())
            parse_python(text)
        except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
            return False  # the module's own reading says what is wrong
        return True

    def files_matching(self, test: Callable[[str], bool]) -> Iterator[tuple[str, str]]:
        """(path, text) of the checked files whose text passes ``test`` (a quick scan of the whole tree:
        nothing is kept)."""
        for path in self.files:
            try:
                text = self.peek(path)
            except OSError:
                continue
            if test(text):
                yield path, text

    def decode_error(self, path: str) -> SyntaxError | None:
        """Why Python could not decode ``path`` (after :meth:`read`), if it could not."""
        return self._decode_errors.get(os.path.normpath(path))

    def module(self, path: str) -> ModuleInfo:
        """The parsed module at ``path`` (parsed once, then cached)."""
        path = os.path.normpath(path)
        if self._tracking is not None:
            self._tracking.add(path)
        info = self._modules.pop(path, None)
        if info is not None:
            self._modules[path] = info  # most recently used last
        if info is None:
            if path not in self._names:
                self._names[path] = _module_name_for(path)
            name, root, is_pkg = self._names[path]
            source = self.read(path)
            info = ModuleInfo(
                path, source, name, root, is_pkg, decode_error=self.decode_error(path), nesting_limit=self.max_nesting
            )
            self._modules[path] = info
        return info

    def trim(self, max_source_bytes: int = 4_000_000) -> None:
        """Forget the least recently used parsed modules (call between files only).

        Parsed libcst trees take ~60x their source size in memory; keeping
        about 4 MB of source parsed holds a run near 300 MB while shared
        dependencies (a package's layers) stay parsed across driver files.
        """
        total = sum(len(m.source) for m in self._modules.values())
        if total <= max_source_bytes:
            return
        for path in list(self._modules):
            if total <= max_source_bytes:
                break
            info = self._modules.pop(path)
            total -= len(info.source)
            self._sources.pop(path, None)
            self._decode_errors.pop(path, None)
            for q in [q for q, c in self._classes.items() if c is not None and c.module is info]:
                del self._classes[q]

    def loaded_modules(self) -> list[ModuleInfo]:
        return list(self._modules.values())

    def find_module(self, name: str, near: ModuleInfo | None = None) -> ModuleInfo | None:
        """The module called ``name``: from the checked files, else on disk next to ``near``."""
        path = self._resolve_module(name, near)
        return self.module(path) if path is not None else None

    def _resolve_module(self, name: str, near: ModuleInfo | None) -> str | None:
        """Memoised :meth:`_find_module_path`; the paths it probed count as read.

        A cached result must go stale when a file appears that would change
        the answer (``helpers.py`` created next to a driver whose import found
        nothing, ``blocks/__init__.py`` beside ``blocks.py``), so the probed
        candidates join the dependencies, missing ones included.
        """
        key = (name, near.root if near is not None else "")
        memo = self._found.get(key)
        if memo is None:
            probed: list[str] = []
            memo = (self._find_module_path(name, near, probed), tuple(probed))
            self._found[key] = memo
        if self._tracking is not None:
            self._tracking.update(memo[1])
        return memo[0]

    def _find_module_path(self, name: str, near: ModuleInfo | None, probed: list[str] | None = None) -> str | None:
        candidates = self._by_name.get(name)
        if near is not None and name and probed is not None:
            rel = Path(*name.split("."))
            for candidate in (Path(near.root) / rel / "__init__.py", Path(near.root) / rel.with_suffix(".py")):
                path = os.path.normpath(str(candidate))
                probed.append(path if os.path.isabs(near.path) else os.path.normpath(os.path.relpath(path)))
        if candidates:
            # As Python's path finder: a package (blocks/__init__.py) wins over
            # a module of the same name (blocks.py) in the same folder.
            candidates = sorted(candidates, key=lambda c: not self._names.get(c[0], ("", "", False))[2])
            if near is not None and len(candidates) > 1:
                same = [c for c in candidates if c[1] == near.root]
                if same:
                    candidates = same
                else:
                    candidates = sorted(
                        candidates,
                        key=lambda c: -len(os.path.commonpath([os.path.abspath(c[0]), os.path.abspath(near.path)])),
                    )
            return candidates[0][0]
        if near is None or not name:
            return None
        # A file next to the checked one that was not listed (checking one file
        # of a package): resolve it from disk so cross-file classes still work.
        rel = Path(*name.split("."))
        for candidate in (Path(near.root) / rel / "__init__.py", Path(near.root) / rel.with_suffix(".py")):
            if candidate.is_file():
                path = os.path.normpath(str(candidate))
                if not os.path.isabs(near.path):
                    path = os.path.normpath(os.path.relpath(path))
                self._by_name.setdefault(name, []).append((path, near.root))
                return path
        return None

    def lookup_module_text(self, qualname: str, near: ModuleInfo | None = None) -> str | None:
        """Source text of the in-tree module defining ``qualname`` (no parse), if any."""
        parts = qualname.split(".")
        for i in range(len(parts) - 1, 0, -1):
            path = self._resolve_module(".".join(parts[:i]), near)
            if path is not None:
                if self._tracking is not None:
                    self._tracking.add(path)  # the result depends on this file's text
                try:
                    return self.read(path)
                except OSError:
                    return None
        return None
