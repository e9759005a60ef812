"""One file of the checked tree: its name table (``ast``) and statements (libcst, parsed on demand)."""

from __future__ import annotations

import ast
import re
from typing import Mapping

import libcst as cst
from libcst.metadata import CodeRange

from ckptlint.files import display_path
from ckptlint.positions import PositionIndex
from ckptlint.sourcetext import (
    LazyAssigns,
    LazyDefs,
    dotted_name,
    flatten,
    KeywordIndex,
    max_nesting,
    mentions_checkpoint,
    parse_cst,
    parse_python,
    parser_gave_up,
    shallow,
    syntax_error,
)

__all__ = ["DEFAULT_MAX_NESTING", "ModuleInfo"]

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
        self.star_imports: list[str] = []  # modules of ``from m import *``, in order
        self.class_bases: dict[str, list[str]] = {}  # top-level class -> base expressions as written
        # Module-level names bound to checkpoint or a partial of it (``ckpt = partial(checkpoint, ...)``).
        self.checkpoint_aliases: set[str] = set()
        self._def_seg: dict[str, int] = {}
        self._assign_segs: dict[str, list[int]] = {}
        self.defs: Mapping[str, cst.FunctionDef | cst.ClassDef] = LazyDefs(self)
        self.assigns: Mapping[str, list[cst.BaseExpression]] = LazyAssigns(self)
        self._offsets = [0, *(m.end() for m in _NEWLINE.finditer(source))]
        self._lines: list[str] | None = None
        self.starts: list[int] = []  # first line of each top-level statement
        self._depths: list[int] = []  # how deeply each one nests (measured while the ast is at hand)
        self._stmts: list[cst.BaseStatement | None] = []
        self._seg_mods: dict[int, cst.Module] = {}
        self._method_lines: dict[int, list[int]] = {}  # top-level class -> its methods' ``def`` lines
        self._places = PositionIndex(self.starts, self._method_lines)
        self._full: cst.Module | None = None
        self.nesting_limit = nesting_limit
        # (line, depth) of top-level statements too deeply nested to hand to
        # libcst: its native parser takes minutes (or overflows its stack) on
        # them, so they stay opaque and the engine reports them (CKP003).
        self.too_deep: list[tuple[int, int]] = []
        self.keywords = KeywordIndex()  # class-like keyword values, filled by the indexing walk
        if decode_error is not None:
            self.parse_error = syntax_error(decode_error)
            return
        # Python's own parser is the gate: what it rejects never reaches
        # libcst, whose native parser can crash the process on such input.
        try:
            tree = parse_python(source)
        except MemoryError as exc:
            if not parser_gave_up(source):
                raise  # the file's memory budget (max-file-memory), not its syntax
            self.parse_error = syntax_error(exc)
            return
        except (SyntaxError, ValueError, RecursionError) as exc:
            if type(exc) is SyntaxError and shallow(source, exc, nesting_limit):
                self._parse_whole(exc)  # maybe syntax newer than this Python (3.12 ``type``)
            else:
                self.parse_error = syntax_error(exc)
            return
        for st in tree.body:
            line = min([st.lineno, *(d.lineno for d in getattr(st, "decorator_list", ()))])
            # As a segment parses: a module around the statement (one level more than the statement).
            depth = max_nesting(st, self.keywords) + 1
            if not self.starts or self.starts[-1] != line:
                self.starts.append(line)  # ``a; b`` is one libcst statement line
                self._depths.append(depth)
            elif depth > self._depths[-1]:
                self._depths[-1] = depth
            if isinstance(st, ast.ClassDef):
                self._method_lines[len(self.starts) - 1] = [
                    f.lineno for f in st.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                ]
            self._index_ast(st, len(self.starts) - 1)
        self._stmts = [None] * len(self.starts)

    # -- parsing -------------------------------------------------------------------

    def _parse_whole(self, python_error: SyntaxError) -> None:
        """libcst over the whole file: newer syntax than the running Python reads.

        Only for a file whose nesting :func:`_shallow` bounded; if libcst
        rejects it too, the finding is Python's error.
        """
        try:
            module = parse_cst(self.source)
        except (cst.ParserSyntaxError, RecursionError):
            self.parse_error = syntax_error(python_error)
            return
        self._full = module
        self.starts = []
        self._stmts = list(module.body)
        self._def_seg.clear()
        self._assign_segs.clear()
        for i, stmt in enumerate(module.body):
            for inner in flatten(stmt):
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
                    self.star_imports.append(base)
                    continue
                local = alias.asname or alias.name
                self.imports.setdefault(local, []).append(f"{base}.{alias.name}" if base else alias.name)
        elif isinstance(st, ast.Assign):
            for t in st.targets:
                if isinstance(t, ast.Name):
                    segs = self._assign_segs.setdefault(t.id, [])
                    if seg not in segs:
                        segs.append(seg)
                    if mentions_checkpoint(st.value):
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

    def parsed_statements(self) -> list[cst.BaseStatement]:
        """The top-level statements parsed so far (those something has looked at), in order."""
        return [s for s in self._stmts if s is not None]

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
            depth = self._depths[index]
            if depth > self.nesting_limit:
                self.too_deep.append((self.starts[index], depth))
            else:
                try:
                    segment = parse_cst(self.source[start:end])
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
            if table is self.imports and base not in self.star_imports:
                self.star_imports.append(base)
            return
        for alias in stmt.names:
            name = dotted_name(alias.name) or ""
            local = name
            if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                local = alias.asname.name.value
            table.setdefault(local, []).append(f"{base}.{name}" if base else name)

    # -- positions ---------------------------------------------------------------

    def position(self, node: cst.CSTNode) -> CodeRange | None:
        """Source range of ``node`` (computed per method of a top-level class, else per top-level statement)."""
        if self.parse_error is not None:
            return None
        return self._places.position(node, self._stmts, self._seg_mods, self._full)

    def code_for(self, node: cst.CSTNode) -> str:
        return cst.Module(body=[]).code_for_node(node)
