"""Home-made checkpoint ``autograd.Function``s: ``MyCheckpoint.apply(fn, x, ...)`` is a checkpoint site.

Megatron's and DeepSpeed's ``CheckpointFunction``, unsloth's offloaded
checkpointer and many research repos re-implement checkpoint as a
``torch.autograd.Function`` whose ``forward(ctx, run_function, *args)`` runs
``run_function`` under ``torch.no_grad()`` and whose ``backward`` runs it
again (``ctx.run_function(*inputs)``). Everything ``run_function`` does
runs twice, exactly as under torch's reentrant checkpoint.

Such a Function replays the RNG only if it stashes and restores it itself
(``torch.get_rng_state``/``set_rng_state``, ``torch.random.fork_rng``,
Megatron's ``get_cuda_rng_tracker``); one that does not behaves like
``preserve_rng_state=False``, so discovery binds that option for its sites.
Recognised by shape, not by name: the class derives from
``torch.autograd.Function``, ``forward`` calls its first non-``ctx``
parameter inside ``with torch.no_grad()`` (or stores it on ``ctx``), and
``backward`` calls what was stored on ``ctx``.
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass
from typing import Iterable

import libcst as cst

from ckptlint.project import ClassInfo, Project
from ckptlint.sourcetext import parse_python

__all__ = ["CustomCheckpoint", "custom_checkpoint", "find_custom_functions"]

_RNG_RESTORE = re.compile(r"rng_state|fork_rng|rng_tracker|get_states\(|set_states\(")
_APPLY_RE = re.compile(r"class\s+\w+\s*\([^)]*Function\s*\)")


@dataclass(frozen=True)
class CustomCheckpoint:
    """A checkpoint ``autograd.Function``: whether it restores the RNG on its recompute."""

    qualname: str
    restores_rng: bool

    def bound(self) -> dict[str, cst.BaseExpression]:
        """Checkpoint options its sites behave as if they passed."""
        return {} if self.restores_rng else {"preserve_rng_state": cst.Name("False")}


def custom_checkpoint(project: Project, quals: Iterable[str]) -> CustomCheckpoint | None:
    """For ``Cls.apply`` (its qualified names), the checkpoint Function ``Cls`` is, else None."""
    cache = project.cache.setdefault("custom_checkpoint", {})
    for q in quals:
        if not q.endswith(".apply"):
            continue
        owner = q[: -len(".apply")]
        if owner in cache:
            found = cache[owner]
        else:
            info = project.lookup(owner)
            found = _classify(info) if isinstance(info, ClassInfo) else None
            cache[owner] = found
        if found is not None:
            return found  # type: ignore[return-value]
    return None


def _classify(info: ClassInfo) -> CustomCheckpoint | None:
    text = info.module.code_for(info.node)
    try:
        tree = ast.parse(textwrap.dedent(text))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    cls = tree.body[0] if tree.body and isinstance(tree.body[0], ast.ClassDef) else None
    if cls is None or not _is_check_function(cls):
        return None
    return CustomCheckpoint(info.qualname, bool(_RNG_RESTORE.search(text)))


def _is_check_function(cls: ast.ClassDef) -> bool:
    if not any((isinstance(b, ast.Attribute) and b.attr == "Function") or (isinstance(b, ast.Name) and b.id == "Function") for b in cls.bases):
        return False
    methods = {f.name: f for f in cls.body if isinstance(f, ast.FunctionDef)}
    fwd, bwd = methods.get("forward"), methods.get("backward")
    if fwd is None or bwd is None or len(fwd.args.args) < 2:
        return False
    ctx_name, fn_name = fwd.args.args[0].arg, fwd.args.args[1].arg
    called_under_no_grad = False
    stored: set[str] = set()
    for node in ast.walk(fwd):
        if isinstance(node, ast.With) and any(_is_no_grad(item.context_expr) for item in node.items):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id == fn_name:
                    called_under_no_grad = True
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Name) and node.value.id == fn_name:
            for t in node.targets:
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == ctx_name:
                    stored.add(t.attr)
    if not (called_under_no_grad and stored):
        return False
    bctx = bwd.args.args[0].arg if bwd.args.args else "ctx"
    return any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in stored
        and isinstance(n.func.value, ast.Name) and n.func.value.id == bctx
        for n in ast.walk(bwd)
    )


def _is_no_grad(expr: ast.expr) -> bool:
    if isinstance(expr, ast.Call):
        expr = expr.func
    name = expr.attr if isinstance(expr, ast.Attribute) else expr.id if isinstance(expr, ast.Name) else ""
    return name in ("no_grad", "inference_mode")


def find_custom_functions(project: Project, paths: Iterable[str]) -> tuple[str, ...]:
    """``<qualname>.apply`` of every checkpoint Function defined in ``paths`` (cheap text test first)."""
    out: list[str] = []
    cache = project.cache.setdefault("find_custom_functions", {})
    for path in paths:
        if path not in cache:
            cache[path] = _in_file(project, path)
        out.extend(cache[path])  # type: ignore[arg-type]
    return tuple(sorted(out))


def _in_file(project: Project, path: str) -> tuple[str, ...]:
    try:
        source = project.read(path)
    except OSError:
        return ()
    if "no_grad" not in source or not _APPLY_RE.search(source):
        return ()
    try:
        tree = parse_python(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return ()
    modname = project.module_name(path)
    return tuple(
        f"{modname}.{node.name}.apply" for node in tree.body if isinstance(node, ast.ClassDef) and _is_check_function(node)
    )
