"""Checkpoint wrappers defined in the checked tree, found cheaply with ``ast``.

``def my_ckpt(fn, *a): return checkpoint(fn, *a, use_reentrant=False)``:
callers of ``my_ckpt`` need not mention checkpoint at all, so the engine's
prefilter and discovery must know the wrapper's name.
"""

from __future__ import annotations

import ast
import re
from typing import TYPE_CHECKING, Iterable

from ckptlint.discovery.custom_functions import find_custom_functions
from ckptlint.sourcetext import parse_python

if TYPE_CHECKING:
    from ckptlint.project import Project

__all__ = ["find_wrappers"]


def find_wrappers(project: Project, paths: Iterable[str], options: object = None) -> tuple[str, ...]:
    """Qualified names of functions in the tree that wrap checkpoint.

    ``def my_ckpt(fn, *a): return checkpoint(fn, *a, use_reentrant=False)``:
    callers of ``my_ckpt`` need not mention checkpoint at all, so the
    prefilter must know the wrapper's name. Uses ``ast`` (cheap) on files
    that call checkpoint directly.
    """
    out: set[str] = set()
    call_re = re.compile(r"\b(?:checkpoint|checkpoint_sequential|_gradient_checkpointing_func)\s*\(")
    cache = project.cache.setdefault("find_wrappers", {})
    for path in paths:
        if path in cache:
            out.update(cache[path])
            continue
        # custom autograd.Function checkpoints: their .apply sites are checkpoint sites too
        found = _wrappers_in(project, path, call_re) + find_custom_functions(project, [path])
        cache[path] = found
        out.update(found)
    return tuple(sorted(out))


# Callee names whose first argument is the checkpointed callable.
_WRAPPED_NAMES = frozenset({"checkpoint", "checkpoint_sequential", "_gradient_checkpointing_func"})
_CALL_NEEDLES = tuple(f"{name}{c}" for name in sorted(_WRAPPED_NAMES) for c in "( \t\n\r\f\v")


def _wrappers_in(project: Project, path: str, call_re: re.Pattern[str]) -> tuple[str, ...]:
    try:
        source = project.read(path)
    except OSError:
        return ()
    if "checkpoint" not in source:  # the substring first: the regex costs 40x more
        return ()
    if not any(needle in source for needle in _CALL_NEEDLES):
        return ()  # every call_re match is one of these names followed by a space or "("
    lines: set[int] = set()  # where a checkpoint name is called
    line, previous = 1, 0
    for match in call_re.finditer(source):
        line += source.count("\n", previous, match.start())
        previous = match.start()
        lines.add(line)
    if not lines:
        return ()
    try:
        tree = parse_python(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return ()
    modname = project.module_name(path)
    out: set[str] = set()
    for node in tree.body:
        funcs: list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]] = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            funcs.append((node.name, node))
        elif isinstance(node, ast.ClassDef):
            funcs.extend(
                (f"{node.name}.{f.name}", f) for f in node.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
            )
        for name, fn in funcs:
            if not any(fn.lineno <= line <= (fn.end_lineno or fn.lineno) for line in lines):
                continue  # no call of a checkpoint name in its lines: nothing to walk
            params = {a.arg for a in (*fn.args.posonlyargs, *fn.args.args)}
            for sub in ast.walk(fn):
                if not isinstance(sub, ast.Call) or not sub.args:
                    continue
                callee = sub.func.attr if isinstance(sub.func, ast.Attribute) else sub.func.id if isinstance(sub.func, ast.Name) else ""
                if callee not in _WRAPPED_NAMES:
                    continue
                first = sub.args[0]
                if isinstance(first, ast.Attribute) and first.attr in ("__call__", "forward"):
                    first = first.value
                if isinstance(first, ast.Name) and first.id in params:
                    out.add(f"{modname}.{name}")
                    break
    return tuple(sorted(out))
