"""Snapshot and restore everything a training step can touch, without copying the model.

What is kept by reference (no copy): existing ``.grad`` tensors, the original
parameter/buffer tensor objects (so a device or dtype move is undone by
putting them back), module training flags, ``requires_grad`` flags.
What is cloned: parameter values (to undo in-place writes to weights, which
a forward can do under ``no_grad``) and buffers (BatchNorm statistics).
What is recorded: RNG states (torch CPU, every CUDA device, Python
``random``, NumPy, every ``torch.Generator`` reachable from the model) and
the plain Python state a forward can mutate: module attributes and the
globals of the Python modules that define the model's classes (scalars and
the contents of lists, dicts and sets, restored in place so that code holding
a reference sees the original contents again).
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import types
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch

try:  # NumPy is a dependency of the runtime extra, but never required to verify.
    import numpy as _np
except ImportError:  # pragma: no cover
    _np = None  # type: ignore[assignment]

from runtime_checks.spill import SnapshotError, remove_stale_spills, spill_to_disk

__all__ = ["ModelState", "ParameterWriteError", "PyState", "RngState", "SnapshotError", "remove_stale_spills", "spill_to_disk"]


class ParameterWriteError(RuntimeError):
    """The model wrote to a parameter during a step and no copy was taken to undo it."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"the model writes to parameter {name!r} during forward/backward (in place), so it was changed "
            "by this verify call and cannot be restored; a parameter written during the step also breaks "
            "checkpointing (the recompute sees the new value). Rerun with verify(..., snapshot_params=True) "
            "to have verify copy the parameters first and undo the writes"
        )


_MAX_CONTAINER = 10_000
_MAX_DEPTH = 4
_SKIP_MODULE_PREFIXES = ("torch", "builtins", "typing", "functools", "collections", "numpy", "_")
_MODULE_INTERNAL_KEYS = frozenset(vars(torch.nn.Module()).keys()) - {"training"}
_SCALARS = (int, float, complex, bool, str, bytes, type(None))


# ----------------------------------------------------------------------------- RNG
@dataclass
class RngState:
    """Every global random stream, captured so that it can be put back bit for bit."""

    cpu: torch.Tensor
    cuda: list[torch.Tensor] | None
    python: Any
    numpy: Any

    @classmethod
    def capture(cls) -> RngState:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        return cls(
            cpu=torch.get_rng_state(),
            cuda=cuda,
            python=random.getstate(),
            numpy=_np.random.get_state() if _np is not None else None,
        )

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
        random.setstate(self.python)
        if _np is not None and self.numpy is not None:
            _np.random.set_state(self.numpy)

    def streams(self) -> dict[str, Any]:
        """Comparable form: stream name -> state (tensors or tuples)."""
        out: dict[str, Any] = {"torch.cpu": self.cpu}
        for i, s in enumerate(self.cuda or ()):
            out[f"torch.cuda:{i}"] = s
        out["random"] = self.python
        if self.numpy is not None:
            kind, keys, pos, has_gauss, gauss = self.numpy
            out["numpy"] = (kind, keys.tobytes(), pos, has_gauss, gauss)
        return out


def seed_everything(seed: int, use_cuda: bool) -> None:
    """Seed the streams a run may draw from, without touching lazy device state.

    ``torch.manual_seed`` would also queue a seed for CUDA (and MPS, XPU)
    when they are not yet initialised: a trace left behind. Seed only what is
    in use.
    """
    torch.default_generator.manual_seed(seed)
    if use_cuda:
        torch.cuda.manual_seed_all(seed)
    random.seed(seed)
    if _np is not None:
        _np.random.seed(seed % 2**32)


# ----------------------------------------------------------------------------- Python state
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


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    try:
        return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr() and a.storage_offset() == b.storage_offset()
    except (RuntimeError, NotImplementedError):  # tensor subclasses without a storage
        return a.data_ptr() == b.data_ptr()


# ----------------------------------------------------------------------------- model tensors
@dataclass
class ModelState:
    """Parameters, buffers, grads and flags of one model; see the module docstring."""

    model: torch.nn.Module
    params: list[tuple[str, torch.nn.Parameter]] = field(default_factory=list)
    param_data: list[torch.Tensor] = field(default_factory=list)  # original tensor objects
    param_clone: list[torch.Tensor] = field(default_factory=list)
    param_marks: list[tuple[int, float]] = field(default_factory=list)
    # "disk" mode: the parameters' values in a temporary file, read back (memory-mapped) only
    # for a parameter that was written; removed by ``restore``.
    param_spill: str | None = None
    # The tensors the runs use (after any move): a ``p.data = ...`` assignment
    # during a run is undone by putting these back.
    run_data: list[torch.Tensor] = field(default_factory=list)
    moved: bool = False  # the runs used moved copies (device/dtype), not the original storage
    _spilled: dict[str, torch.Tensor] | None = None
    grads: list[torch.Tensor | None] = field(default_factory=list)
    requires_grad: list[bool] = field(default_factory=list)
    buffers: list[tuple[torch.nn.Module, str, str]] = field(default_factory=list)
    buffer_objects: list[torch.Tensor | None] = field(default_factory=list)
    buffer_clone: list[torch.Tensor | None] = field(default_factory=list)
    training: list[tuple[torch.nn.Module, bool]] = field(default_factory=list)

    @classmethod
    def capture(cls, model: torch.nn.Module) -> ModelState:
        st = cls(model=model)
        st.params = list(model.named_parameters())
        st.param_data = [p.data for _, p in st.params]
        st.grads = [p.grad for _, p in st.params]
        st.requires_grad = [p.requires_grad for _, p in st.params]
        for mname, mod in model.named_modules():
            for bname, buf in mod._buffers.items():
                st.buffers.append((mod, bname, f"{mname}.{bname}" if mname else bname))
                st.buffer_objects.append(buf)
        st.training = [(m, m.training) for m in model.modules()]
        return st

    def detach_grads(self) -> None:
        """Take existing .grad out of the way (kept by reference, restored at the end)."""
        for _, p in self.params:
            p.grad = None

    def move(self, device: torch.device | None, dtype: torch.dtype | None) -> None:
        """Place the model on ``device``/``dtype`` for the runs (undone by ``restore``)."""
        if device is None and dtype is None:
            return
        self.moved = True
        with torch.no_grad():
            for _, p in self.params:
                p.data = p.data.to(device=device, dtype=dtype if (dtype is not None and p.is_floating_point()) else None)
            for mod, bname, _ in self.buffers:
                buf = mod._buffers[bname]
                if buf is not None:
                    mod._buffers[bname] = buf.to(
                        device=device, dtype=dtype if (dtype is not None and buf.is_floating_point()) else None
                    )

    def clone_values(self, params: bool | str) -> None:
        """Clone buffer values, and keep the parameter values as they are now (after any move).

        ``params=True`` copies parameters in memory; ``"disk"`` writes them to
        a temporary file (no extra memory; read back only for a parameter that
        was written); ``False`` keeps nothing. Writes are detected through the
        version counter, the storage a parameter points at (``p.data = ...``)
        and a sum (which also sees ``p.data.mul_()``); with nothing kept,
        ``ParameterWriteError`` is raised.
        """
        with torch.no_grad():
            self.run_data = [p.data for _, p in self.params]
            self.param_clone = [p.detach().clone() for _, p in self.params] if params is True else []
            if params == "disk" and self.params:
                self.param_spill = spill_to_disk({str(i): p.detach() for i, (_, p) in enumerate(self.params)})
            self.param_marks = [self._mark(p) for _, p in self.params]
            self.buffer_clone = [
                (mod._buffers[b].detach().clone() if mod._buffers[b] is not None else None) for mod, b, _ in self.buffers
            ]

    @staticmethod
    def _mark(p: torch.Tensor) -> tuple[int, float]:
        if p.numel() == 0 or not (p.is_floating_point() or p.is_complex()):
            return (p._version, 0.0)
        # A sum in the parameter's own dtype: a memory-speed pass (a float64
        # accumulation is several times slower) and deterministic for
        # unchanged values, which is all a change detector needs.
        total = p.detach().sum()
        return (p._version, complex(total).real if p.is_complex() else float(total))

    def _written(self, i: int, p: torch.Tensor, full_check: bool) -> bool:
        """Whether parameter ``i``'s value changed since ``clone_values`` (version counter; with ``full_check`` a sum too)."""
        version, before = self.param_marks[i]
        if p._version != version:
            return True
        if not full_check:
            return False
        mark = self._mark(p)[1]
        return mark != before and not (mark != mark and before != before)  # NaN == NaN here

    def _rebound(self, i: int, p: torch.Tensor) -> bool:
        """Whether ``p.data = ...`` pointed parameter ``i`` at another tensor during the run."""
        data = self.run_data[i]
        return not (
            _same_storage(p, data) and p.shape == data.shape and p.dtype == data.dtype and p.stride() == data.stride()
        )

    def _reload_param(self, i: int, p: torch.nn.Parameter) -> None:
        """Point parameter ``i`` at its run tensor again and put its value back from the spill file."""
        assert self.param_spill is not None
        if self._spilled is None:
            self._spilled = torch.load(self.param_spill, map_location="cpu", mmap=True, weights_only=True)
        target = self.run_data[i]
        if self._rebound(i, p):
            p.data = target
        target.copy_(self._spilled[str(i)].to(target.device))  # through .data: p's version counter stays
        self.param_marks[i] = self._mark(p)

    def _drop_spill(self) -> None:
        self._spilled = None
        if self.param_spill is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.param_spill)
            self.param_spill = None

    def reset_for_run(self, *, full_check: bool = True) -> None:
        """Put values, flags and modes back to the starting point; grads to None.

        Without an in-memory copy, writes are looked for before every run:
        through the version counter, the storage each parameter points at
        (``p.data = new``) and a sum (``p.data.mul_()`` bumps no version
        counter; one read of the parameters, cheaper than the forward that
        follows). A write is undone from the spill file, or raises
        ``ParameterWriteError`` when nothing was kept.
        """
        with torch.no_grad():
            for i, ((name, p), rg) in enumerate(zip(self.params, self.requires_grad)):
                if p.requires_grad != rg:
                    p.requires_grad_(rg)
                if self.param_clone:
                    saved = self.param_clone[i]
                    if self._rebound(i, p):
                        p.data = self.run_data[i]
                    # Copy only when changed: copy_ bumps the version counter.
                    if not torch.equal(self.run_data[i], saved):
                        self.run_data[i].copy_(saved)
                elif self._rebound(i, p) or self._written(i, p, full_check):
                    if self.param_spill is None:
                        raise ParameterWriteError(name)
                    self._reload_param(i, p)
                p.grad = None
            for (mod, bname, _), saved in zip(self.buffers, self.buffer_clone):
                cur = mod._buffers.get(bname)
                if saved is None or cur is None:
                    continue
                if cur.shape != saved.shape or cur.dtype != saved.dtype:
                    mod._buffers[bname] = saved.clone()
                elif not torch.equal(cur, saved):
                    cur.copy_(saved)
        for mod, mode in self.training:
            mod.training = mode

    def check_unwritten(self) -> None:
        """Raise ``ParameterWriteError`` if a parameter was written and nothing was kept to undo it."""
        if self.param_clone or self.param_spill is not None:
            return
        with torch.no_grad():
            for i, (name, p) in enumerate(self.params):
                if self._rebound(i, p) or self._written(i, p, full_check=True):
                    raise ParameterWriteError(name)

    def buffer_values(self) -> dict[str, torch.Tensor]:
        """Current buffer values (cloned), keyed by their dotted name."""
        out: dict[str, torch.Tensor] = {}
        for mod, bname, name in self.buffers:
            buf = mod._buffers.get(bname)
            if buf is not None:
                out[name] = buf.detach().clone()
        return out

    def restore(self) -> None:
        """Put everything back exactly as captured (the original tensor objects, grads, flags)."""
        try:
            self._restore()
        finally:
            self._drop_spill()

    def _restore(self) -> None:
        with torch.no_grad():
            for idx, ((_, p), data, clone, grad, rg) in enumerate(zip(
                self.params, self.param_data, self.param_clone or [None] * len(self.params), self.grads, self.requires_grad
            )):
                # Without a move the runs used the original storage: undo any write to it.
                if self.param_spill is not None and not self.moved and self.run_data:
                    if self._rebound(idx, p) or self._written(idx, p, full_check=True):
                        self._reload_param(idx, p)
                p.data = data
                if clone is not None and clone.device == data.device and clone.dtype == data.dtype and not torch.equal(data, clone):
                    data.copy_(clone)
                p.grad = grad
                if p.requires_grad != rg:
                    p.requires_grad_(rg)
            for (mod, bname, _), obj, clone in zip(self.buffers, self.buffer_objects, self.buffer_clone or [None] * len(self.buffers)):
                mod._buffers[bname] = obj
                if obj is not None and clone is not None and clone.device == obj.device and clone.dtype == obj.dtype:
                    if clone.shape == obj.shape and not torch.equal(obj, clone):
                        obj.copy_(clone)
        for mod, mode in self.training:
            mod.training = mode
