"""Name resolution and lookup of in-tree classes and functions.

``cp.checkpoint`` -> ``torch.utils.checkpoint.checkpoint`` through the module's import table;
``pkg.blocks.Block`` -> the :class:`ClassInfo` of that class in the checked tree, following
re-exports, star imports, submodules and module-level aliases; a class's bases and methods along
its in-tree MRO. A mixin of :class:`ckptlint.project.Project`, which supplies the modules.
"""

from __future__ import annotations

from typing import Any, Iterator

import libcst as cst

from ckptlint.project_types import ClassInfo, FunctionInfo
from ckptlint.sourcemodule import ModuleInfo
from ckptlint.sourcetext import dotted_name

__all__ = ["NameLookup"]


class NameLookup:
    """Name resolution and class/function lookup (mixin of the project)."""

    _classes: dict[str, ClassInfo | None]
    cache: dict[str, dict[str, object]]
    find_module: Any

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
        if mod.star_imports and _depth < 4:
            # ``from ._blocks import *``: the name as the star-imported module binds it.
            for star in mod.star_imports:
                target = self.find_module(star, mod)
                if target is not None and target is not mod and self._binds(target, name):
                    return self.resolve_name(target, name, _depth + 1)
        return [name]

    @staticmethod
    def _binds(mod: ModuleInfo, name: str) -> bool:
        return name in mod.imports or name in mod.defs or name in mod.assigns

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
