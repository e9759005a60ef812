"""Modules built through registries: ``MODELS.build(dict(type="Bottleneck", ...))``.

mmengine-style registries (``@MODELS.register_module()`` on a class, ``MODELS.build(cfg)``,
``build_from_cfg(cfg, MODELS)``) and detectron2-style ones (``@BACKBONE_REGISTRY.register()``,
``BACKBONE_REGISTRY.get(name)``) map a config's ``type`` string to a class. The index of what the
checked tree registers is read from the files' text (decorators and ``register_module(module=...)``
calls, no parse) the first time an upper-case name (``MODELS``, ``BACKBONE_REGISTRY``) is queried as a
registry, per registry name (its last dotted part, so
mmdet's and mmengine's ``MODELS`` are one: they share names through their parent registry).

A constant key (``dict(type="BN")``, followed through names, defaults and the file's configs as
for ``build_norm_layer``) builds exactly its class — in-tree, else the known-classes file's
``[cfg-types]`` (``BN`` -> ``torch.nn.BatchNorm2d``); the config's other keywords are the
constructor's arguments (``dict(type="BN", track_running_stats=False)``). A key not known here
builds any class of that registry when it holds at most ``MAX_UNION`` of them; a larger registry
(every backbone and head of a toolkit) says nothing, rather than blame one block for all of them.
"""

from __future__ import annotations

import re
from typing import Any

import libcst as cst

from ckptlint.infer import known
from ckptlint.infer.lattice import ClassRef, Frame, Instance
from ckptlint.project import ClassInfo, dotted_name

__all__ = ["MAX_UNION", "Registries"]

MAX_UNION = 12
_DECORATOR = re.compile(
    r"^[ \t]*@[ \t]*(?:\w+\.)*(\w+)\.register(?:_module)?\b(?:[ \t]*\((?P<args>[^)]*)\))?[ \t]*\n"
    r"(?:[ \t]*@[^\n]*\n)*[ \t]*class[ \t]+(?P<cls>\w+)",
    re.MULTILINE,
)
# ``(\w+)`` is the name right before ``.register_module(`` (a ``(?:\w+\.)*`` prefix found the same
# name after backtracking at every position: 0.25 s over timm's 34 files that mention ``.register``).
_CALL = re.compile(r"(\w+)\.register_module\((?P<args>[^)]*\bmodule[ \t]*=[ \t]*(?P<cls>\w+)[^)]*)\)")
_NAME_ARG = re.compile(r"""(?:\bname[ \t]*=[ \t]*)?(?P<q>['"])(?P<name>[\w.\-]+)(?P=q)""")
_BUILD_FROM_CFG = ("build_from_cfg",)


class Registries:
    """Mixin of the evaluator (``project``, ``_class_refs``, ``_config_sources`` and ``_config_literals`` come from it)."""

    project: Any
    _config_sources: Any
    _config_literals: Any

    def registry_built(self, call: cst.Call, fr: Frame, depth: int) -> list[Instance] | None:
        """What ``R.build(cfg)`` / ``build_from_cfg(cfg, R)`` builds; None when ``call`` is not a registry build."""
        found = self._registry_call(call, "build")
        if found is None:
            return None
        registry, cfg = found
        out: list[Instance] = []
        for ref, kwargs in self._registered(registry, cfg, fr, depth):
            out.append(Instance(ref.qualnames, ref.cls, fr.module, call, kwargs, (), frame=fr))
        return out

    def registry_classes(self, call: cst.Call, fr: Frame, depth: int) -> list[ClassRef] | None:
        """The classes ``R.get(name)`` returns (detectron2 style); None when ``call`` is not one."""
        found = self._registry_call(call, "get")
        if found is None:
            return None
        return [ref for ref, _ in self._registered(found[0], found[1], fr, depth)]

    def _registry_call(self, call: cst.Call, method: str) -> tuple[str, cst.BaseExpression] | None:
        func = call.func
        positional = [a.value for a in call.args if a.keyword is None and not a.star]
        keyword = {a.keyword.value: a.value for a in call.args if a.keyword is not None}
        if isinstance(func, cst.Attribute) and func.attr.value == method:
            registry = _last(func.value)
            cfg = positional[0] if positional else keyword.get("cfg")
        elif method == "build" and isinstance(func, (cst.Name, cst.Attribute)) and _last(func) in _BUILD_FROM_CFG:
            registry = _last(positional[1]) if len(positional) > 1 else _last(keyword.get("registry"))
            cfg = positional[0] if positional else keyword.get("cfg")
        else:
            return None
        if registry is None or cfg is None or not registry.isupper():  # registries are constants: MODELS, BACKBONES
            return None
        if registry not in self._registry_index() and method != "build":
            return None  # an out-of-tree ``MODELS.build(dict(type="BN"))`` still reads the known config types
        return registry, cfg

    def _registered(
        self, registry: str, cfg: cst.BaseExpression, fr: Frame, depth: int
    ) -> list[tuple[ClassRef, tuple[tuple[str, cst.BaseExpression], ...]]]:
        entries = self._registry_index().get(registry, {})
        self._depend_on(entries)
        keys: list[tuple[str, tuple[tuple[str, cst.BaseExpression], ...]]] = []
        for value, _ in self._config_sources(cfg, fr, depth):
            if isinstance(value, cst.SimpleString) and isinstance(value.evaluated_value, str):
                keys.append((value.evaluated_value, ()))
            elif (type_name := known.cfg_type_of(value)) is not None:
                keys.append((type_name, _config_kwargs(value)))
        if not keys and isinstance(cfg, cst.Name):
            keys = [(t, ()) for t in self._config_literals(fr.module, cfg.value)]
        out: list[tuple[ClassRef, tuple[tuple[str, cst.BaseExpression], ...]]] = []
        if keys:
            for key, kwargs in keys:
                classes = [c for c in (self._registered_class(e) for e in entries.get(key, ())) if c is not None]
                if classes:
                    out.extend((ClassRef((c.qualname,), c, None, frame=fr), kwargs) for c in classes)
                elif (outside := known.cfg_type_class(key)) is not None:
                    out.append((ClassRef((outside,), None, None, frame=fr), kwargs))
            return out
        every = [e for group in entries.values() for e in group]
        if len(every) > MAX_UNION:
            return []
        return [(ClassRef((c.qualname,), c, None, frame=fr), ()) for c in map(self._registered_class, every) if c is not None]

    def _registered_class(self, entry: tuple[str, str]) -> ClassInfo | None:
        path, name = entry
        mod = self.project.module(path)
        found = self.project.lookup(f"{mod.name}.{name}", mod)
        return found if isinstance(found, ClassInfo) else None

    def _depend_on(self, entries: dict[str, list[tuple[str, str]]]) -> None:
        """What a registry lookup returns depends on every file that registers into it."""
        self.project.depends_on(path for group in entries.values() for path, _ in group)

    def _registry_index(self) -> dict[str, dict[str, list[tuple[str, str]]]]:
        """registry name -> registered name -> [(file, class name)], from the tree's text."""
        memo = self.project.cache.setdefault("registry_index", {})  # once per run, whatever the evaluator
        cached = memo.get("index")
        if cached is not None:
            return cached  # type: ignore[return-value]
        index: dict[str, dict[str, list[tuple[str, str]]]] = {}
        for path, text in self.project.files_matching(lambda text: ".register" in text):
            for m in _DECORATOR.finditer(text):
                _add(index, m.group(1), m.group("args"), m.group("cls"), path)
            for m in _CALL.finditer(text) if "register_module(" in text else ():
                _add(index, m.group(1), m.group("args"), m.group("cls"), path)
        memo["index"] = index
        return index


def _add(index: dict[str, dict[str, list[tuple[str, str]]]], registry: str, args: str | None, cls: str, path: str) -> None:
    names = [m.group("name") for m in _NAME_ARG.finditer(args or "")] or [cls]
    table = index.setdefault(registry, {})
    for name in names:
        entry = (path, cls)
        if entry not in table.setdefault(name, []):
            table[name].append(entry)


def _config_kwargs(cfg: cst.BaseExpression) -> tuple[tuple[str, cst.BaseExpression], ...]:
    """``dict(type="BN", momentum=0.1)`` -> ``(("momentum", ...),)``: the constructor's keywords."""
    if isinstance(cfg, cst.Call):
        return tuple((a.keyword.value, a.value) for a in cfg.args if a.keyword is not None and a.keyword.value != "type")
    if isinstance(cfg, cst.Dict):
        return tuple(
            (el.key.evaluated_value, el.value)  # type: ignore[misc]
            for el in cfg.elements
            if isinstance(el, cst.DictElement) and isinstance(el.key, cst.SimpleString) and el.key.evaluated_value != "type"
        )
    return ()


def _last(expr: cst.BaseExpression | None) -> str | None:
    name = dotted_name(expr) if expr is not None else None
    return name.rsplit(".", 1)[-1] if name else None
