"""Well-known classes outside the checked tree, from ``ckptlint/data/known_classes.toml``.

Code imports ``torchvision.ops.Conv2dNormActivation``, timm's
``BatchNormAct2d`` or mmcv's ``ConvModule`` without their source being
checked; the data file says what each such class contains that matters under
checkpoint (running-stat norms, in-place activations, dropout) and how its
constructor arguments change that. The file is versioned with ckptlint;
more entries (same tables) are merged in through :func:`extend`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Callable, Mapping

import libcst as cst

__all__ = [
    "KnownClass",
    "batchnorm_names",
    "container_kind",
    "extend",
    "factory_classes",
    "cfg_factory",
    "cfg_type_of",
    "is_container",
    "known_class",
    "table",
]


@dataclass(frozen=True)
class KnownClass:
    """What one out-of-tree module class contains, and which constructor arguments change it."""

    qualname: str
    contains: tuple[str, ...] = ()  # classes of the members built by default
    # constructor argument -> (position or -1, the default member it replaces)
    replaces: tuple[tuple[str, int, str], ...] = ()
    # ``norm_cfg=dict(type="BN")`` style arguments: argument -> member kind looked up in [cfg-types]
    cfg_args: tuple[tuple[str, int], ...] = ()


_EXTRA: list[Mapping[str, Any]] = []


@lru_cache(maxsize=1)
def _base() -> dict[str, Any]:
    text = resources.files("ckptlint.data").joinpath("known_classes.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def extend(extra: Mapping[str, Any]) -> None:
    """Merge a table with the data file's layout over the defaults."""
    _EXTRA.append(extra)
    table.cache_clear()


@lru_cache(maxsize=1)
def table() -> dict[str, dict[str, Any]]:
    """The merged tables: ``containers``, ``batchnorm``, ``classes``, ``factories``, ``cfg-types``."""
    merged: dict[str, dict[str, Any]] = {}
    for source in (_base(), *_EXTRA):
        for section, entries in source.items():
            if isinstance(entries, dict):
                merged.setdefault(section, {}).update(entries)
    return merged


def _section(name: str) -> dict[str, Any]:
    return table().get(name, {})


def is_container(qualnames: tuple[str, ...] | list[str]) -> bool:
    """An out-of-tree subclass of a torch container (``mmengine.model.ModuleList``)."""
    containers = _section("containers")
    return any(q in containers for q in qualnames)


def container_kind(qualnames: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The torch container an out-of-tree container class behaves like."""
    containers = _section("containers")
    return tuple(containers[q] for q in qualnames if q in containers) or tuple(qualnames)


@lru_cache(maxsize=1)
def batchnorm_names() -> frozenset[str]:
    """Out-of-tree classes that are BatchNorms tracking running stats (timm's ``BatchNormAct2d``...)."""
    return frozenset(_section("batchnorm"))


def known_class(qualnames: tuple[str, ...] | list[str]) -> KnownClass | None:
    classes = _section("classes")
    for q in qualnames:
        entry = classes.get(q)
        if entry is not None:
            return KnownClass(
                q,
                tuple(entry.get("contains", ())),
                tuple((arg, int(spec[0]), str(spec[1])) for arg, spec in entry.get("replaces", {}).items()),
                tuple((arg, int(pos)) for arg, pos in entry.get("cfg-args", {}).items()),
            )
    return None


def cfg_factory(qualnames: tuple[str, ...] | list[str]) -> tuple[int, int] | None:
    """``(config position, tuple index)`` of an out-of-tree builder such as mmcv's ``build_norm_layer``."""
    factories = _section("cfg-factories")
    for q in qualnames:
        entry = factories.get(q)
        if entry is not None:
            return int(entry.get("cfg", 0)), int(entry.get("index", -1))
    return None


def cfg_type_class(type_name: str) -> str | None:
    """``dict(type="BN")`` -> ``torch.nn.BatchNorm2d`` (mmcv/mmengine registry names)."""
    return _section("cfg-types").get(type_name)


def factory_classes(qualnames: tuple[str, ...] | list[str], call: cst.Call) -> list[str]:
    """Classes an out-of-tree factory call returns: ``get_norm_act_layer('batchnorm')``.

    A factory entry maps a string (or the last component of a class name)
    given as its first argument to a class; an unknown key yields every class
    the entry lists, so a BatchNorm among them is never missed.
    """
    factories = _section("factories")
    for q in qualnames:
        entry = factories.get(q)
        if entry is None:
            continue
        keys: Mapping[str, str] = entry.get("keys", {})
        arg = next((a.value for a in call.args if a.keyword is None), None)
        key: str | None = None
        if isinstance(arg, cst.SimpleString) and isinstance(arg.evaluated_value, str):
            key = arg.evaluated_value.replace("_", "").lower().split("-")[0]
        elif isinstance(arg, (cst.Name, cst.Attribute)):
            last = arg.attr.value if isinstance(arg, cst.Attribute) else arg.value
            key = last.lower()
        if key is not None and key in keys:
            return [keys[key]]
        if key is not None and entry.get("prefix"):
            hits = [cls for k, cls in keys.items() if key.startswith(k)]
            if hits:
                return hits[:1]
        return sorted(set(keys.values()))
    return []


def cfg_type_of(expr: cst.BaseExpression) -> str | None:
    """``dict(type="BN")`` / ``{"type": "BN"}`` -> ``"BN"``."""
    pairs: list[tuple[str | None, cst.BaseExpression]] = []
    if isinstance(expr, cst.Call) and isinstance(expr.func, cst.Name) and expr.func.value == "dict":
        pairs = [(a.keyword.value if a.keyword else None, a.value) for a in expr.args]
    elif isinstance(expr, cst.Dict):
        pairs = [
            (el.key.evaluated_value if isinstance(el.key, cst.SimpleString) else None, el.value)  # type: ignore[misc]
            for el in expr.elements if isinstance(el, cst.DictElement)
        ]
    for key, value in pairs:
        if key == "type" and isinstance(value, cst.SimpleString) and isinstance(value.evaluated_value, str):
            return value.evaluated_value
    return None


def members(
    qualnames: tuple[str, ...], argument: Callable[[str, int], cst.BaseExpression | None],
    resolve: Callable[[cst.BaseExpression], list[str]],
) -> list[str]:
    """Qualified names of the members an out-of-tree object builds, its constructor arguments applied.

    ``argument(name, position)`` gives the expression passed for a parameter
    (None when not passed); ``resolve`` turns a class expression into its
    qualified names.
    """
    entry = known_class(qualnames)
    if entry is None:
        return []
    out = list(entry.contains)
    for arg, position, replaced in entry.replaces:
        value = argument(arg, position if position >= 0 else -1)
        if value is None:
            continue
        out = [m for m in out if m != replaced]
        if not (isinstance(value, cst.Name) and value.value == "None"):
            out.extend(resolve(value)[:1])
    for arg, position in entry.cfg_args:
        value = argument(arg, position)
        type_name = cfg_type_of(value) if value is not None else None
        cls = cfg_type_class(type_name) if type_name is not None else None
        if cls is not None:
            out.append(cls)
    return out
