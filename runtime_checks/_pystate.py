"""The plain Python state a forward can mutate, recorded and put back in place.

Module attributes, the globals of the Python modules that define the model's
classes, closure cells of hooks, hook dicts, and every ``torch.Generator``
reachable from the model. Part of the snapshot (:mod:`runtime_checks.snapshot`,
which re-exports :class:`PyState`).
"""

from __future__ import annotations

import sys
import types
from collections import OrderedDict, defaultdict
from typing import Any

import torch

__all__ = ["PyState"]

_MAX_CONTAINER = 10_000
_MAX_DEPTH = 4
_SKIP_MODULE_PREFIXES = ("torch", "builtins", "typing", "functools", "collections", "numpy", "_")
_MODULE_INTERNAL_KEYS = frozenset(vars(torch.nn.Module()).keys()) - {"training"}
_SCALARS = (int, float, complex, bool, str, bytes, type(None))


class PyState:
    """Plain Python state reachable from the model: module attributes, class-defining globals, generators."""

    def __init__(self, model: torch.nn.Module, extra_objects: tuple[Any, ...] = ()) -> None:
        self.entries: list[tuple[Any, str, Any]] = []  # (owner namespace, key, snap)
        # Per entry, where it lives: module path + attribute, module.global, hook.<closure>.var.
        self.labels: list[str] = []
        self.generators: dict[str, torch.Generator] = {}
        # Attribute names each module had: attributes a run creates (lazy
        # caches, first-call flags) are removed again before the next run.
        self.module_keys: list[tuple[dict[str, Any], frozenset[str]]] = []
        # Hook dicts (each module's and torch's global ones), restored in place:
        # a model that installs hooks lazily on its first call (transformers'
        # output capturing) would otherwise gain a set of hooks every run.
        self.hook_dicts: list[tuple[dict[Any, Any], list[tuple[Any, Any]]]] = []
        self.hook_flags: list[tuple[dict[str, Any], str, Any]] = []
        seen_namespaces: set[int] = set()
        module_paths = {id(m): n for n, m in model.named_modules(remove_duplicate=False)}
        for key, value in vars(torch.nn.modules.module).items():
            if key.startswith("_global_") and "hook" in key and isinstance(value, dict):
                self._snap_hook_dict(value)
        for mod in model.modules():
            ns = mod.__dict__
            path = module_paths.get(id(mod), "")
            self.module_keys.append((ns, frozenset(ns)))
            for key in _MODULE_INTERNAL_KEYS & ns.keys():
                if "hook" in key:
                    if isinstance(ns[key], dict):
                        self._snap_hook_dict(ns[key])
                    else:  # _is_full_backward_hook: set by the first register_full_backward_hook
                        self.hook_flags.append((ns, key, ns[key]))
            for key, value in list(ns.items()):
                if key in _MODULE_INTERNAL_KEYS:
                    continue
                label = f"{path}.{key}" if path else key
                self.entries.append((ns, key, self._snap(value, _MAX_DEPTH, label)))
                self.labels.append(label)
            for hooks_name in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
                for hook in getattr(mod, hooks_name, {}).values():
                    self._snap_callable(hook)
            for cls in type(mod).__mro__:
                modname = getattr(cls, "__module__", "") or ""
                if modname.startswith(_SKIP_MODULE_PREFIXES):
                    continue
                pymod = sys.modules.get(modname)
                if pymod is None or id(pymod) in seen_namespaces:
                    continue
                seen_namespaces.add(id(pymod))
                self._snap_globals(pymod.__dict__, modname)
        for obj in extra_objects:
            self._snap_callable(obj)

    def _snap_hook_dict(self, hooks: dict[Any, Any]) -> None:
        self.hook_dicts.append((hooks, list(hooks.items())))

    def _restore_hooks(self) -> None:
        for hooks, items in self.hook_dicts:
            if not items:  # most hook dicts are empty, and stay so
                if hooks:
                    hooks.clear()
                continue
            if len(hooks) != len(items) or any(hooks.get(k, _MISSING) is not v for k, v in items):
                hooks.clear()
                hooks.update(items)
        for ns, key, value in self.hook_flags:
            if ns.get(key, _MISSING) is not value:
                ns[key] = value

    def _snap_globals(self, ns: dict[str, Any], where: str) -> None:
        for key, value in list(ns.items()):
            if key.startswith("__") or isinstance(value, (types.ModuleType, type, types.FunctionType)):
                continue
            if isinstance(value, _SCALARS + (list, dict, set, torch.Generator)):
                self.entries.append((ns, key, self._snap(value, _MAX_DEPTH, f"{where}.{key}")))
                self.labels.append(f"{where}.{key}")

    def _snap_callable(self, fn: Any) -> None:
        """Hooks and callables keep counters in closure cells: snapshot those cells."""
        closure = getattr(fn, "__closure__", None)
        code = getattr(fn, "__code__", None)
        if closure and code is not None:
            for var, cell in zip(code.co_freevars, closure):
                try:
                    value = cell.cell_contents
                except ValueError:
                    continue
                if isinstance(value, _SCALARS + (list, dict, set, torch.Generator)):
                    label = f"{getattr(fn, '__qualname__', type(fn).__name__)}.<closure>.{var}"
                    self.entries.append((cell, "", self._snap(value, _MAX_DEPTH, label)))
                    self.labels.append(label)
        func = getattr(fn, "__func__", None)
        if func is not None:
            self._snap_callable(func)

    def _snap(self, value: Any, depth: int, where: str) -> tuple[str, Any, Any]:
        if isinstance(value, torch.Generator):
            self.generators.setdefault(where, value)
            return ("gen", value, value.get_state())
        if depth > 0:
            t = type(value)
            if t is list and len(value) <= _MAX_CONTAINER:
                return ("list", value, [self._snap(v, depth - 1, f"{where}[{i}]") for i, v in enumerate(value)])
            if t in (dict, OrderedDict, defaultdict) and len(value) <= _MAX_CONTAINER:
                return ("dict", value, [(k, self._snap(v, depth - 1, f"{where}[{k!r}]")) for k, v in value.items()])
            if t is set and len(value) <= _MAX_CONTAINER:
                return ("set", value, set(value))
        return ("ref", value, None)

    @staticmethod
    def _restore_snap(snap: tuple[str, Any, Any]) -> Any:
        kind, obj, content = snap
        if kind == "gen":
            obj.set_state(content)
        elif kind == "list":
            items = [PyState._restore_snap(s) for s in content]
            if len(obj) != len(items) or any(a is not b for a, b in zip(obj, items)):
                obj[:] = items
        elif kind == "dict":
            items = [(k, PyState._restore_snap(s)) for k, s in content]
            if len(obj) != len(items) or any(k not in obj or obj[k] is not v for k, v in items):
                obj.clear()
                obj.update(items)
        elif kind == "set":
            if obj != content:
                obj.clear()
                obj.update(content)
        return obj

    def restore(self) -> None:
        self._restore_hooks()
        for ns, keys in self.module_keys:
            for key in [k for k in ns if k not in keys and k not in _MODULE_INTERNAL_KEYS]:
                del ns[key]
        for owner, key, snap in self.entries:
            value = self._restore_snap(snap)
            if isinstance(owner, dict):
                if owner.get(key, _MISSING) is not value:
                    owner[key] = value
            else:  # a closure cell
                if owner.cell_contents is not value:
                    owner.cell_contents = value

    def scalar_values(self) -> dict[str, Any]:
        """Current values of the scalar attributes/globals, for 'state' comparison."""
        out: dict[str, Any] = {}
        for (owner, key, snap), label in zip(self.entries, self.labels):
            if snap[0] != "ref" or not isinstance(snap[1], _SCALARS):
                continue
            current = owner.get(key, _MISSING) if isinstance(owner, dict) else owner.cell_contents
            if isinstance(current, _SCALARS):
                out[label] = current
        return out

    def generator_states(self) -> dict[str, torch.Tensor]:
        return {f"generator:{k}": g.get_state() for k, g in self.generators.items()}


_MISSING = object()
