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
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import libcst as cst
from libcst.metadata import CodeRange, MetadataWrapper, PositionProvider

from ckptlint.files import display_path

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


def dotted_name(node: cst.BaseExpression) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, else None."""
    parts: list[str] = []
    while isinstance(node, cst.Attribute):
        parts.append(node.attr.value)
        node = node.value
    if isinstance(node, cst.Name):
        parts.append(node.value)
        return ".".join(reversed(parts))
    return None


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


def decode_source(data: bytes) -> str:
    """Decode like Python does (BOM / coding cookie), falling back to UTF-8 with replacement."""
    try:
        return strict_decode(data)
    except SyntaxError:
        return data.decode("utf-8", errors="replace")


def strict_decode(data: bytes) -> str:
    """Decode exactly as Python's compiler would, or raise ``SyntaxError`` with its message.

    No coding cookie means UTF-8 (PEP 3120): a Latin-1 file without one is a
    file Python refuses to import, so it is reported rather than guessed at.
    """
    import io
    import tokenize

    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError as exc:
        if "invalid or missing encoding declaration" not in str(exc):
            raise SyntaxError(str(exc).split(" for ", 1)[0]) from None  # an unknown or conflicting cookie
        encoding = "utf-8"  # no cookie and a first line that is not UTF-8: say so below
    try:
        return data.decode(encoding)
    except LookupError:
        raise SyntaxError(f"unknown encoding: {encoding}") from None
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1)
        if encoding in ("utf-8", "utf-8-sig"):
            message = f"not UTF-8 (byte {data[exc.start]:#04x}); use a coding declaration (PEP 263) or re-encode the file"
        else:
            message = f"not valid {encoding} (byte {data[exc.start]:#04x}) although the coding declaration says so"
        err = SyntaxError(message)
        err.lineno, err.offset = line, column + 1
        raise err from None


def _parser_gave_up(source: str) -> bool:
    """Whether a ``MemoryError`` from ``ast.parse`` is CPython's "too complex" verdict.

    CPython 3.11's parser reports a stack overflow on deep nesting (10,000
    unary minuses) as a bare ``MemoryError``; real exhaustion needs a big
    file or an address-space limit (the ``max-file-memory`` budget).
    """
    try:
        import resource

        limited = resource.getrlimit(resource.RLIMIT_AS)[0] != resource.RLIM_INFINITY
    except (ImportError, ValueError, OSError):
        limited = False
    return not limited or len(source) < 1_000_000


# Python's parser errors about nesting it refuses: never second-guessed by libcst.
_NESTING_ERRORS = ("too many nested parentheses", "too many levels of indentation")


def _shallow(source: str, error: SyntaxError, limit: int) -> bool:
    """Whether a file Python rejects may still go to libcst (for newer syntax).

    Only when Python did not complain about nesting and the brackets and
    indentation (Python's tokenizer, in pure Python) stay within ``limit``:
    libcst's native parser overflows its stack on deeply nested input.
    """
    import io
    import tokenize

    if any(text in (error.msg or "") for text in _NESTING_ERRORS) or len(source) > 2_000_000:
        return False
    depth = indent = 0
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.OP and tok.string in "([{":
                depth += 1
                if depth > limit:
                    return False
            elif tok.type == tokenize.OP and tok.string in ")]}":
                depth -= 1
            elif tok.type == tokenize.INDENT:
                indent += 1
                if indent > limit:
                    return False
            elif tok.type == tokenize.DEDENT:
                indent -= 1
    except (tokenize.TokenError, SyntaxError, ValueError):
        return False
    return True


def max_nesting(node: ast.AST) -> int:
    """How deeply the syntax tree under ``node`` nests (iteratively: never recurses)."""
    best = 0
    stack = [(node, 1)]
    pop, push, children = stack.pop, stack.append, ast.iter_child_nodes
    while stack:
        item, depth = pop()
        if depth > best:
            best = depth
        for child in children(item):
            push((child, depth + 1))
    return best


def _syntax_error(exc: BaseException) -> tuple[str, int, int]:
    """Python's own message and position for a file its parser rejects."""
    if isinstance(exc, SyntaxError):
        return (exc.msg or "invalid syntax", exc.lineno or 1, max((exc.offset or 1) - 1, 0))
    if isinstance(exc, ValueError):  # "source code string cannot contain null bytes"
        return (str(exc), 1, 0)
    # RecursionError / the parser's MemoryError: CPython's compiler gives up the same way.
    return ("too deeply nested (or too complex) for Python's parser", 1, 0)


@dataclass
class FunctionInfo:
    """A function or method defined in the tree."""

    qualname: str  # "pkg.mod.Class.method"
    short: str  # "Class.method" (what messages show)
    module: ModuleInfo
    node: cst.FunctionDef
    cls: ClassInfo | None = None


@dataclass
class ClassInfo:
    """A class defined in the tree."""

    qualname: str
    short: str
    module: ModuleInfo
    node: cst.ClassDef
    bases: tuple[tuple[str, ...], ...]  # each base: its candidate qualified names
    methods: dict[str, cst.FunctionDef] = field(default_factory=dict)
    class_attrs: dict[str, cst.BaseExpression] = field(default_factory=dict)


class _LazyDefs(Mapping[str, "cst.FunctionDef | cst.ClassDef"]):
    """Top-level defs by name, parsed only when looked up."""

    def __init__(self, info: "ModuleInfo") -> None:
        self._info = info

    def __getitem__(self, name: str) -> cst.FunctionDef | cst.ClassDef:
        seg = self._info._def_seg[name]
        found: cst.FunctionDef | cst.ClassDef | None = None
        for stmt in _flatten(self._info.statement(seg)):
            if isinstance(stmt, (cst.FunctionDef, cst.ClassDef)) and stmt.name.value == name:
                found = stmt
        if found is None:
            raise KeyError(name)
        return found

    def __contains__(self, name: object) -> bool:
        return name in self._info._def_seg

    def __iter__(self) -> Iterator[str]:
        return iter(self._info._def_seg)

    def __len__(self) -> int:
        return len(self._info._def_seg)


class _LazyAssigns(Mapping[str, "list[cst.BaseExpression]"]):
    """Module-level ``name = value`` bindings, parsed only when looked up."""

    def __init__(self, info: "ModuleInfo") -> None:
        self._info = info
        self._cache: dict[str, list[cst.BaseExpression]] = {}

    def __getitem__(self, name: str) -> list[cst.BaseExpression]:
        if name in self._cache:
            return self._cache[name]
        segs = self._info._assign_segs[name]
        values: list[cst.BaseExpression] = []
        for seg in segs:
            for stmt in _flatten(self._info.statement(seg)):
                if not isinstance(stmt, cst.SimpleStatementLine):
                    continue
                for small in stmt.body:
                    if isinstance(small, cst.Assign):
                        if any(isinstance(t.target, cst.Name) and t.target.value == name for t in small.targets):
                            values.append(small.value)
                    elif (
                        isinstance(small, cst.AnnAssign)
                        and isinstance(small.target, cst.Name)
                        and small.target.value == name
                        and small.value is not None
                    ):
                        values.append(small.value)
        self._cache[name] = values
        return values

    def __contains__(self, name: object) -> bool:
        return name in self._info._assign_segs

    def __iter__(self) -> Iterator[str]:
        return iter(self._info._assign_segs)

    def __len__(self) -> int:
        return len(self._info._assign_segs)


def _flatten(stmt: cst.CSTNode) -> Iterator[cst.CSTNode]:
    """A top-level statement and the statements of its if/try/with blocks (which bind names too)."""
    yield stmt
    bodies: list[Sequence[cst.CSTNode]] = []
    if isinstance(stmt, cst.If):
        bodies.append(stmt.body.body)
        orelse = stmt.orelse
        while orelse is not None:
            bodies.append(orelse.body.body)
            orelse = orelse.orelse if isinstance(orelse, cst.If) else None
    elif isinstance(stmt, (cst.Try, cst.TryStar)):
        bodies.append(stmt.body.body)
        bodies.extend(h.body.body for h in stmt.handlers)
        if stmt.orelse is not None:
            bodies.append(stmt.orelse.body.body)
        if stmt.finalbody is not None:
            bodies.append(stmt.finalbody.body.body)
    elif isinstance(stmt, cst.With):
        bodies.append(stmt.body.body)
    for body in bodies:
        for inner in body:
            yield from _flatten(inner)


def _resolve_positions(module: cst.Module) -> Mapping[cst.CSTNode, CodeRange] | None:
    """libcst positions for ``module``; deep generated expressions get a higher recursion limit."""
    import sys

    try:
        return MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
    except (RecursionError, KeyError):
        pass
    limit = sys.getrecursionlimit()
    try:
        sys.setrecursionlimit(max(limit, 30000))
        return MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
    except (RecursionError, KeyError, MemoryError):
        return None
    finally:
        sys.setrecursionlimit(limit)


def _mentions_checkpoint(value: ast.expr) -> bool:
    """``torch.utils.checkpoint.checkpoint`` or ``partial(checkpoint, ...)`` as an assigned value."""
    candidates: list[ast.expr] = [value]
    if isinstance(value, ast.Call):
        candidates.extend(value.args)
    for c in candidates:
        while isinstance(c, ast.Attribute):
            if "checkpoint" in c.attr:
                return True
            c = c.value
        if isinstance(c, ast.Name) and "checkpoint" in c.id:
            return True
    return False


_NEWLINE = re.compile(r"\r\n|\r|\n")
# Deeper statements are not parsed by libcst (see ModuleInfo.too_deep). Real
# code nests ~20 levels (transformers' deepest: 21); libcst needs seconds per
# thousand levels and its native parser overflows its stack further down.
DEFAULT_MAX_NESTING = 100


class ModuleInfo:
    """One file: its name table (from ``ast``) and its statements (libcst, parsed on demand).

    ``ast`` indexes a file ~8x faster than libcst parses it, and most of a
    model file (configs, registries, heads) is never needed to check its
    checkpointed code. So the file is split into top-level statements by
    ``ast`` line numbers and each statement is parsed with libcst only when
    something asks for it; positions are computed per statement and shifted
    to the file. A file ``ast`` cannot read is parsed whole by libcst (which
    then reports the syntax error, or reads newer syntax the running Python
    does not know).
    """

    def __init__(
        self,
        path: str,
        source: str,
        name: str,
        root: str,
        is_package: bool,
        *,
        decode_error: SyntaxError | None = None,
        nesting_limit: int = DEFAULT_MAX_NESTING,
    ) -> None:
        self.path = path
        self.display = display_path(path)
        self.name = name
        self.root = root
        self.is_package = is_package
        self.source = source
        self.parse_error: tuple[str, int, int] | None = None  # message, line, column (0-based)
        self.imports: dict[str, list[str]] = {}
        self.class_bases: dict[str, list[str]] = {}  # top-level class -> base expressions as written
        # Module-level names bound to checkpoint or a partial of it (``ckpt = partial(checkpoint, ...)``).
        self.checkpoint_aliases: set[str] = set()
        self._def_seg: dict[str, int] = {}
        self._assign_segs: dict[str, list[int]] = {}
        self.defs: Mapping[str, cst.FunctionDef | cst.ClassDef] = _LazyDefs(self)
        self.assigns: Mapping[str, list[cst.BaseExpression]] = _LazyAssigns(self)
        self._offsets = [0, *(m.end() for m in _NEWLINE.finditer(source))]
        self._lines: list[str] | None = None
        self.starts: list[int] = []  # first line of each top-level statement
        self._stmts: list[cst.BaseStatement | None] = []
        self._seg_positions: dict[int, dict[cst.CSTNode, CodeRange]] = {}
        self._seg_mods: dict[int, cst.Module] = {}
        self._positions: dict[cst.CSTNode, CodeRange] = {}
        self._stmt_of: dict[int, int] = {}  # id(node) -> statement index, filled as statements are walked
        self._walked: set[int] = set()
        self._full: cst.Module | None = None
        self.nesting_limit = nesting_limit
        # (line, depth) of top-level statements too deeply nested to hand to
        # libcst: its native parser takes minutes (or overflows its stack) on
        # them, so they stay opaque and the engine reports them (CKP003).
        self.too_deep: list[tuple[int, int]] = []
        if decode_error is not None:
            self.parse_error = _syntax_error(decode_error)
            return
        # Python's own parser is the gate: what it rejects never reaches
        # libcst, whose native parser can crash the process on such input.
        try:
            tree = ast.parse(source)
        except MemoryError as exc:
            if not _parser_gave_up(source):
                raise  # the file's memory budget (max-file-memory), not its syntax
            self.parse_error = _syntax_error(exc)
            return
        except (SyntaxError, ValueError, RecursionError) as exc:
            if type(exc) is SyntaxError and _shallow(source, exc, nesting_limit):
                self._parse_whole(exc)  # maybe syntax newer than this Python (3.12 ``type``)
            else:
                self.parse_error = _syntax_error(exc)
            return
        for st in tree.body:
            line = min([st.lineno, *(d.lineno for d in getattr(st, "decorator_list", ()))])
            if not self.starts or self.starts[-1] != line:
                self.starts.append(line)  # ``a; b`` is one libcst statement line
            self._index_ast(st, len(self.starts) - 1)
        self._stmts = [None] * len(self.starts)

    # -- parsing -------------------------------------------------------------------

    def _parse_whole(self, python_error: SyntaxError) -> None:
        """libcst over the whole file: newer syntax than the running Python reads.

        Only for a file whose nesting :func:`_shallow` bounded; if libcst
        rejects it too, the finding is Python's error.
        """
        try:
            module = cst.parse_module(self.source)
        except (cst.ParserSyntaxError, RecursionError):
            self.parse_error = _syntax_error(python_error)
            return
        self._full = module
        self.starts = []
        self._stmts = list(module.body)
        self._def_seg.clear()
        self._assign_segs.clear()
        for i, stmt in enumerate(module.body):
            for inner in _flatten(stmt):
                if isinstance(inner, (cst.FunctionDef, cst.ClassDef)):
                    self._def_seg[inner.name.value] = i
                    if isinstance(inner, cst.ClassDef):
                        self.class_bases[inner.name.value] = [
                            module.code_for_node(a.value) for a in inner.bases if a.keyword is None
                        ]
                elif isinstance(inner, cst.SimpleStatementLine):
                    for small in inner.body:
                        if isinstance(small, (cst.Import, cst.ImportFrom)):
                            self.add_import(small, self.imports)
                        elif isinstance(small, cst.Assign):
                            for t in small.targets:
                                if isinstance(t.target, cst.Name):
                                    self._assign_segs.setdefault(t.target.value, []).append(i)
                                    value = small.value
                                    candidates = [value, *(a.value for a in value.args)] if isinstance(value, cst.Call) else [value]
                                    if any("checkpoint" in (dotted_name(c) or "") for c in candidates):
                                        self.checkpoint_aliases.add(t.target.value)
                        elif isinstance(small, cst.AnnAssign) and isinstance(small.target, cst.Name):
                            self._assign_segs.setdefault(small.target.value, []).append(i)

    def _index_ast(self, st: ast.stmt, seg: int) -> None:
        if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            self._def_seg[st.name] = seg
            if isinstance(st, ast.ClassDef):
                self.class_bases[st.name] = [ast.unparse(b) for b in st.bases]
        elif isinstance(st, ast.Import):
            for alias in st.names:
                if alias.asname:
                    self.imports.setdefault(alias.asname, []).append(alias.name)
                else:
                    head = alias.name.split(".")[0]
                    self.imports.setdefault(head, []).append(head)
        elif isinstance(st, ast.ImportFrom):
            base = self._absolute_name(st.module or "", st.level)
            for alias in st.names:
                if alias.name == "*":
                    continue
                local = alias.asname or alias.name
                self.imports.setdefault(local, []).append(f"{base}.{alias.name}" if base else alias.name)
        elif isinstance(st, ast.Assign):
            for t in st.targets:
                if isinstance(t, ast.Name):
                    segs = self._assign_segs.setdefault(t.id, [])
                    if seg not in segs:
                        segs.append(seg)
                    if _mentions_checkpoint(st.value):
                        self.checkpoint_aliases.add(t.id)
        elif isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name):
            segs = self._assign_segs.setdefault(st.target.id, [])
            if seg not in segs:
                segs.append(seg)
        elif isinstance(st, ast.If):
            for inner in (*st.body, *st.orelse):
                self._index_ast(inner, seg)
        elif isinstance(st, (ast.Try, getattr(ast, "TryStar", ast.Try))):
            for inner in (*st.body, *(x for h in st.handlers for x in h.body), *st.orelse, *st.finalbody):
                self._index_ast(inner, seg)
        elif isinstance(st, ast.With):
            for inner in st.body:
                self._index_ast(inner, seg)

    @property
    def statement_count(self) -> int:
        return len(self._stmts)

    def statement(self, index: int) -> cst.BaseStatement:
        """Top-level statement ``index`` as a libcst node (parsed on first use)."""
        stmt = self._stmts[index]
        if stmt is None:
            start = self._offsets[self.starts[index] - 1]
            end = (
                self._offsets[self.starts[index + 1] - 1] if index + 1 < len(self.starts) else len(self.source)
            )
            segment = None
            depth = self._nesting(start, end)
            if depth > self.nesting_limit:
                self.too_deep.append((self.starts[index], depth))
            else:
                try:
                    segment = cst.parse_module(self.source[start:end])
                except (RecursionError, MemoryError, cst.ParserSyntaxError):
                    segment = None
            if segment is None or len(segment.body) != 1:
                # libcst reads this statement differently from ast (rare grammar
                # corners): treat it as opaque rather than fail the file.
                segment = cst.parse_module("pass\n")
            stmt = segment.body[0]
            self._stmts[index] = stmt
            self._seg_mods[index] = segment
        return stmt

    def _nesting(self, start: int, end: int) -> int:
        """Nesting depth of the source between two offsets (one top-level statement)."""
        try:
            tree = ast.parse(self.source[start:end])
        except (SyntaxError, ValueError, RecursionError):
            return 0  # the whole file parsed, so this is an ast/libcst split corner
        return max_nesting(tree)

    @property
    def module(self) -> cst.Module:
        """All statements as one module (parses every statement: avoid on hot paths)."""
        if self._full is not None:
            return self._full
        return cst.Module(body=[self.statement(i) for i in range(self.statement_count)])

    @property
    def package(self) -> str:
        if self.is_package:
            return self.name
        return self.name.rpartition(".")[0]

    @property
    def lines(self) -> list[str]:
        """Source lines, split the way ``ast`` counts them."""
        if self._lines is None:
            offs = self._offsets
            self._lines = [self.source[offs[i] : offs[i + 1]].rstrip("\r\n") for i in range(len(offs) - 1)]
            if offs[-1] < len(self.source):
                self._lines.append(self.source[offs[-1] :])
        return self._lines

    def _absolute_name(self, module: str, level: int) -> str:
        if level == 0:
            return module
        pkg = self.package.split(".") if self.package else []
        base = [] if level - 1 > len(pkg) else pkg[: len(pkg) - (level - 1)]
        return ".".join([*base, *([module] if module else [])])

    def _absolute(self, module: cst.BaseExpression | None, level: int) -> str:
        return self._absolute_name((dotted_name(module) or "") if module is not None else "", level)

    def add_import(self, stmt: cst.Import | cst.ImportFrom, table: dict[str, list[str]]) -> None:
        """Record the names one import statement binds into ``table``."""
        if isinstance(stmt, cst.Import):
            for alias in stmt.names:
                full = dotted_name(alias.name) or ""
                if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                    table.setdefault(alias.asname.name.value, []).append(full)
                else:
                    head = full.split(".")[0]
                    table.setdefault(head, []).append(head)
            return
        level = len(stmt.relative)
        base = self._absolute(stmt.module, level)
        if isinstance(stmt.names, cst.ImportStar):
            return
        for alias in stmt.names:
            name = dotted_name(alias.name) or ""
            local = name
            if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                local = alias.asname.name.value
            table.setdefault(local, []).append(f"{base}.{name}" if base else name)

    # -- positions ---------------------------------------------------------------

    def position(self, node: cst.CSTNode) -> CodeRange | None:
        """Source range of ``node`` (positions are computed per top-level statement)."""
        if self.parse_error is not None:
            return None
        found = self._positions.get(node)
        if found is not None:
            return found
        index = self._statement_index(node)
        if index is None or index in self._seg_positions:
            return None
        if self._full is not None:
            # Whole-file parse (fallback): one position pass over the file.
            self._positions.update(_resolve_positions(self._full) or {})
            for i in range(len(self._stmts)):
                self._seg_positions[i] = {}
            return self._positions.get(node)
        segment = self._seg_mods[index]
        positions = _resolve_positions(segment)
        if positions is None:
            self._seg_positions[index] = {}
            return None
        offset = self.starts[index] - 1  # the segment's line 1 is the statement's first line
        for n, r in positions.items():
            if offset:
                r = CodeRange((r.start.line + offset, r.start.column), (r.end.line + offset, r.end.column))
            self._positions[n] = r
        self._seg_positions[index] = {}
        return self._positions.get(node)

    def _statement_index(self, node: cst.CSTNode) -> int | None:
        from ckptlint.analysis.walk import walk

        cached = self._stmt_of.get(id(node))
        if cached is not None:
            return cached
        for i, stmt in enumerate(self._stmts):
            if stmt is None or i in self._walked:
                continue
            self._walked.add(i)
            for n in walk(stmt):
                self._stmt_of[id(n)] = i
            if id(node) in self._stmt_of:
                return i
        return self._stmt_of.get(id(node))

    def code_for(self, node: cst.CSTNode) -> str:
        return cst.Module(body=[]).code_for_node(node)


class Project:
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

    # -- name resolution ---------------------------------------------------------

    def resolve_name(self, mod: ModuleInfo, name: str, _depth: int = 0) -> list[str]:
        """Qualified names a module-level name may refer to (any may match)."""
        if name in mod.imports:
            return list(mod.imports[name])
        if name in mod.defs:
            return [f"{mod.name}.{name}"]
        if name in mod.assigns and _depth < 4:
            out: list[str] = []
            for value in mod.assigns[name]:
                out.extend(self.resolve_expr(mod, value, _depth + 1))
            return out or [f"{mod.name}.{name}"]
        return [name]

    def resolve_expr(self, mod: ModuleInfo, expr: cst.BaseExpression, _depth: int = 0) -> list[str]:
        """Qualified names of a Name/Attribute chain at module scope."""
        dotted = dotted_name(expr)
        if dotted is None:
            return []
        head, _, rest = dotted.partition(".")
        return [f"{q}.{rest}" if rest else q for q in self.resolve_name(mod, head, _depth)]

    def lookup(self, qualname: str, near: ModuleInfo | None = None, _depth: int = 0) -> FunctionInfo | ClassInfo | None:
        """The in-tree class or function a qualified name denotes, if any."""
        if _depth > 6:
            return None
        parts = qualname.split(".")
        for i in range(len(parts) - 1, 0, -1):
            modname = ".".join(parts[:i])
            mod = self.find_module(modname, near)
            if mod is None:
                continue
            found = self._lookup_in(mod, parts[i:], _depth)
            if found is not None:
                return found
        return None

    def _lookup_in(self, mod: ModuleInfo, rest: list[str], depth: int) -> FunctionInfo | ClassInfo | None:
        head = rest[0]
        node = mod.defs.get(head)
        if node is None:
            if head in mod.imports:
                for target in mod.imports[head]:
                    found = self.lookup(".".join([target, *rest[1:]]), mod, depth + 1)
                    if found is not None:
                        return found
                # ``from . import blocks`` binds a submodule.
            sub = self.find_module(f"{mod.name}.{head}", mod) if not mod.name.endswith(f".{head}") else None
            if sub is not None and len(rest) > 1:
                return self._lookup_in(sub, rest[1:], depth + 1)
            if head in mod.assigns and depth < 5:
                for value in mod.assigns[head]:
                    for q in self.resolve_expr(mod, value):
                        found = self.lookup(".".join([q, *rest[1:]]), mod, depth + 1)
                        if found is not None:
                            return found
            return None
        qual = f"{mod.name}.{head}"
        if isinstance(node, cst.ClassDef):
            cls = self.class_info(mod, node, qual)
            if len(rest) == 1:
                return cls
            if len(rest) == 2 and rest[1] in cls.methods:
                return self.function_info(mod, cls.methods[rest[1]], f"{qual}.{rest[1]}", cls)
            return None
        if len(rest) == 1:
            return self.function_info(mod, node, qual, None)
        return None

    def class_info(self, mod: ModuleInfo, node: cst.ClassDef, qualname: str) -> ClassInfo:
        cached = self._classes.get(qualname)
        if cached is not None and cached.node is node:
            return cached
        bases = tuple(tuple(self.resolve_expr(mod, arg.value)) for arg in node.bases if arg.keyword is None)
        info = ClassInfo(qualname, qualname[len(mod.name) + 1 :] or node.name.value, mod, node, bases)
        body = node.body.body if isinstance(node.body, cst.IndentedBlock) else ()
        for stmt in body:
            if isinstance(stmt, cst.FunctionDef):
                info.methods[stmt.name.value] = stmt
            elif isinstance(stmt, cst.SimpleStatementLine):
                for small in stmt.body:
                    if isinstance(small, cst.Assign):
                        for t in small.targets:
                            if isinstance(t.target, cst.Name):
                                info.class_attrs[t.target.value] = small.value
                    elif isinstance(small, cst.AnnAssign) and isinstance(small.target, cst.Name) and small.value:
                        info.class_attrs[small.target.value] = small.value
        self._classes[qualname] = info
        return info

    def function_info(self, mod: ModuleInfo, node: cst.FunctionDef, qualname: str, cls: ClassInfo | None) -> FunctionInfo:
        short = qualname[len(mod.name) + 1 :] if qualname.startswith(mod.name + ".") else qualname
        return FunctionInfo(qualname, short, mod, node, cls)

    def base_classes(self, cls: ClassInfo, _seen: set[str] | None = None) -> Iterator[ClassInfo]:
        """In-tree base classes, depth first, each once."""
        seen = _seen if _seen is not None else {cls.qualname}
        for candidates in cls.bases:
            for q in candidates:
                base = self.lookup(q, cls.module)
                if isinstance(base, ClassInfo) and base.qualname not in seen:
                    seen.add(base.qualname)
                    yield base
                    yield from self.base_classes(base, seen)
                    break

    def all_base_names(self, cls: ClassInfo) -> set[str]:
        """Qualified names of every base (in-tree or not), transitively."""
        cache = self.cache.setdefault("all_base_names", {})
        key = f"{cls.module.path}:{cls.qualname}"
        if key in cache:
            return cache[key]  # type: ignore[return-value]
        cache[key] = names = self._all_base_names(cls)
        return names

    def _all_base_names(self, cls: ClassInfo) -> set[str]:
        names: set[str] = set()
        stack = [cls]
        seen = {cls.qualname}
        while stack:
            c = stack.pop()
            for candidates in c.bases:
                names.update(candidates)
                for q in candidates:
                    base = self.lookup(q, c.module)
                    if isinstance(base, ClassInfo) and base.qualname not in seen:
                        seen.add(base.qualname)
                        names.add(base.qualname)
                        stack.append(base)
                        break
        return names

    def find_method(self, cls: ClassInfo, name: str) -> FunctionInfo | None:
        """``name`` looked up along the in-tree MRO of ``cls``."""
        for c in (cls, *self.base_classes(cls)):
            node = c.methods.get(name)
            if node is not None:
                return self.function_info(c.module, node, f"{c.qualname}.{name}", c)
        return None
