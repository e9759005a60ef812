"""Modules built from ``dict(type=...)`` configs by out-of-tree builders (mmcv's ``build_norm_layer``).

``self.norm1_name, norm1 = build_norm_layer(norm_cfg, planes, postfix=1)``: the known-classes file says
where the config sits and where the module is in what the builder returns; the config's ``type`` names
the class (``"BN"`` -> ``torch.nn.BatchNorm2d``). The config is followed through names and parameter
defaults; a parameter the block only receives (default ``None``) takes every config written for that
name in the file, as a backbone passes its own ``norm_cfg`` down.
"""

from __future__ import annotations

import ast
from typing import Any

import libcst as cst

from ckptlint.infer import known
from ckptlint.infer.lattice import Frame, Instance
from ckptlint.project import ModuleInfo
from ckptlint.sourcetext import parse_python

__all__ = ["Configs", "config_literals"]

MAX_CONFIG_DEPTH = 8


class Configs:
    """Mixin of the evaluator: ``_class_refs`` and ``sources`` come from it."""

    _class_refs: Any
    sources: Any

    def cfg_factory_index(self, call: cst.Call, fr: Frame) -> int | None:
        """Where the module sits in what an out-of-tree config builder returns (-1: it is the result)."""
        for ref in self._class_refs(call.func, fr, 1):
            if ref.cls is None and ref.func is None:
                spec = known.cfg_factory(ref.qualnames)
                if spec is not None:
                    return spec[1]
        return None

    def _cfg_built(self, call: cst.Call, spec: tuple[int, int], fr: Frame, depth: int) -> list[Instance]:
        """``build_norm_layer(dict(type="BN"), c)``: the class the config names (through names and defaults).

        ``spec`` is the builder's ``(config position, tuple index)`` from ``known.cfg_factory``.
        """
        positional = [a.value for a in call.args if a.keyword is None and not a.star]
        if len(positional) <= spec[0]:
            return []
        cfg = positional[spec[0]]
        types = [known.cfg_type_of(value) for value, _ in self._config_sources(cfg, fr, depth)]
        if not any(types) and isinstance(cfg, cst.Name):
            # A parameter the block only receives (``norm_cfg=None`` by default; the backbone passes its own
            # ``norm_cfg=dict(type="BN")`` down): every such config written in this file may arrive.
            types = list(self._config_literals(fr.module, cfg.value))
        out: list[Instance] = []
        for type_name in types:
            cls = known.cfg_type_class(type_name) if type_name is not None else None
            if cls is not None and not any(i.qualnames == (cls,) for i in out):
                out.append(Instance((cls,), None, fr.module, call, frame=fr))
        return out

    def resolved_config_kwargs(
        self, qualnames: tuple[str, ...], kwargs: tuple[tuple[str, cst.BaseExpression], ...], fr: Frame, depth: int
    ) -> tuple[tuple[str, cst.BaseExpression], ...]:
        """An out-of-tree class's config keywords (mmcv ``ConvModule``'s ``norm_cfg``) passed as a name:
        replaced by the ``dict(type=...)`` the name holds, so what the class builds can be read from it."""
        entry = known.known_class(qualnames)
        if entry is None or not entry.cfg_args:
            return kwargs
        config_args = {arg for arg, _ in entry.cfg_args}
        out = []
        for key, value in kwargs:
            if key in config_args and isinstance(value, cst.Name):
                value = self._config_expression(value, fr, depth) or value
            out.append((key, value))
        return tuple(out)

    def _config_expression(self, name: cst.Name, fr: Frame, depth: int) -> cst.BaseExpression | None:
        """The first ``dict(type=...)`` ``name`` may hold (through names and defaults, else in the file)."""
        for value, _ in self._config_sources(name, fr, depth):
            if known.cfg_type_of(value) is not None:
                return value
        types = self._config_literals(fr.module, name.value)
        return cst.parse_expression(f"dict(type={types[0]!r})") if types else None

    def _config_literals(self, mod: ModuleInfo, name: str) -> tuple[str, ...]:
        """``config_literals`` of ``mod``, once per (file, name) for this evaluator's project."""
        cache: dict[tuple[str, str], tuple[str, ...]] = self.__dict__.setdefault("_config_literals_cache", {})
        key = (mod.path, name)
        if key not in cache:
            cache[key] = config_literals(mod.source, name)
        return cache[key]

    def _config_sources(self, expr: cst.BaseExpression, fr: Frame, depth: int) -> list[tuple[cst.BaseExpression, Frame]]:
        if isinstance(expr, cst.Name) and depth <= MAX_CONFIG_DEPTH:
            out = []
            for value, vfr in self.sources(expr.value, fr):
                if value is not expr:
                    out.extend(self._config_sources(value, vfr, depth + 1))
            return out
        return [(expr, fr)]


def config_literals(source: str, name: str) -> tuple[str, ...]:
    """``type`` strings of the ``dict(type=...)`` configs written for ``name`` in ``source``: as a keyword
    argument (``norm_cfg=dict(type="BN")``) or a parameter default (``def f(norm_cfg=dict(type="BN"))``)."""
    if name not in source:
        return ()
    try:
        tree = parse_python(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return ()
    values: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == name:
            values.append(node.value)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            positional = [*args.posonlyargs, *args.args]
            for arg, default in zip(positional[len(positional) - len(args.defaults):], args.defaults):
                if arg.arg == name:
                    values.append(default)
            for arg, default in zip(args.kwonlyargs, args.kw_defaults):
                if arg.arg == name and default is not None:
                    values.append(default)
    out: list[str] = []
    for v in values:
        type_name = None
        if isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and v.func.id == "dict":
            type_name = next((k.value.value for k in v.keywords if k.arg == "type" and isinstance(k.value, ast.Constant)), None)
        elif isinstance(v, ast.Dict):
            type_name = next((val.value for key, val in zip(v.keys, v.values)
                              if isinstance(key, ast.Constant) and key.value == "type" and isinstance(val, ast.Constant)), None)
        if isinstance(type_name, str) and type_name not in out:
            out.append(type_name)
    return tuple(out)
