"""Recompute value check: each region's first forward against its own recompute, op by op.

torch checks only the count, shapes, dtypes and devices of recomputed saved
tensors; a same-shape divergence (a closure counter, a global, RNG torch does
not restore) passes silently, and a failing check ("Recomputed values for the
following tensors have different metadata") names a tensor position only.

One extra checkpointed run under a ``torch.overrides.TorchFunctionMode``
(public) records, per region, every torch call's output: its op name, the
innermost module running it (torch's global module hooks, public), a
checksum (sum and absolute sum in float64), shape and dtype, and the source
line that made the call. Calls made in the forward and calls made during
backward (the recompute) are compared in order: the first call whose output
differs names the op, the module and the line. No saved-tensor hook is
installed: inside a region those would replace checkpoint's own and change
what it recomputes. The run's cost is one step plus the checksums, whatever
the number of regions, which makes it the one-pass localiser.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from runtime_checks import bypass
from runtime_checks.census import owning_region
from runtime_checks.report import Divergence

__all__ = ["ValueRecorder"]

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_OWN_DIR = os.path.dirname(__file__) + os.sep
_CHECKPOINT_FILE = os.path.join(_TORCH_DIR, "utils", "checkpoint.py")
# Relative agreement of two checksums of the same values computed twice: a
# deterministic kernel agrees exactly; allow for atomics on accelerators.
_RTOL = 1e-5


@dataclass
class _Call:
    op: str
    module: str
    shape: tuple[int, ...]
    dtype: str
    total: float
    absolute: float
    source: str

    def show(self) -> str:
        return f"{self.op}([{','.join(map(str, self.shape))}] {self.dtype.replace('torch.', '')})"


def _op_name(func: Any) -> str:
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
    for prefix, public in (("_VariableFunctionsClass.", "torch."), ("_TensorBase.", "Tensor."), ("TensorBase.", "Tensor.")):
        if name.startswith(prefix):
            return public + name[len(prefix) :]
    module = getattr(func, "__module__", None) or ""
    return f"{module.replace('torch.nn.functional', 'F')}.{name}" if module.startswith("torch.nn.functional") else name


def _source() -> str:
    frame = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename
        if not path.startswith((_TORCH_DIR, _OWN_DIR)) and "contextlib" not in path:
            return f"{path}:{frame.f_lineno}"
        frame = frame.f_back  # type: ignore[assignment]
    return ""


class ValueRecorder(TorchFunctionMode):
    """Records every torch call's output per region, module and phase (forward / backward).

    The mode is pushed when a module inside a region starts and popped when
    the last such module returns, so it is active in the forward and in the
    recompute (which torch runs from inside backward) alike, and nowhere else.
    Calls are compared module by module: a recompute that runs a region's
    forward without that region's own ``__call__`` (``partial(Layer.forward,
    self)``) still runs its submodules'.
    """

    def __init__(self, model: torch.nn.Module, regions: list[str]) -> None:
        super().__init__()
        self.paths = bypass.module_paths(model)
        self.root = type(model).__name__
        self.regions = regions
        self.region_of: dict[str, str | None] = {}
        self.stack: list[tuple[str, str | None]] = []
        self.inside = 0
        self.phase = "forward"
        self.order: dict[tuple[str, str], int] = {}
        self.calls: dict[str, dict[tuple[str, str], list[_Call]]] = {
            "forward": defaultdict(list), "backward": defaultdict(list)
        }

    def backward(self) -> None:
        self.phase = "backward"

    def _region(self, path: str) -> str | None:
        if path not in self.region_of:
            if path in self.regions:
                found: str | None = path
            elif self.root in self.regions:
                found = self.root
            else:
                found = owning_region(path + ".", self.regions)
            self.region_of[path] = found
        return self.region_of[path]

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if not self.stack or sys._getframe(1).f_code.co_filename.startswith(_CHECKPOINT_FILE):
            return out  # checkpoint's own bookkeeping differs between forward and recompute
        path, region = self.stack[-1]
        if region is None:
            return out
        op = _op_name(func)
        if op.endswith("_") and not op.endswith("__"):
            # An in-place op returns the tensor it wrote (BatchNorm's step
            # counter, a buffer update): what it wrote shows in later ops.
            return out
        first = out[0] if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor) else out
        if not isinstance(first, torch.Tensor) or first.layout != torch.strided:
            return out
        with torch.no_grad():
            t = first.detach()
            if t.is_complex():
                v = torch.nan_to_num(t.abs().to(torch.float64))
            else:
                v = torch.nan_to_num(t.to(torch.float64))
            total = float(v.sum()) if v.numel() else 0.0
            absolute = float(v.abs().sum()) if v.numel() else 0.0
        key = (region, path)
        if self.phase == "forward":
            self.order.setdefault(key, len(self.order))
        self.calls[self.phase][key].append(
            _Call(op, path, tuple(t.shape), str(t.dtype), total, absolute, _source())
        )
        return out

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """Module stack through torch's global module hooks; the mode active inside regions."""
        paths = self.paths

        def pre(module: torch.nn.Module, _args: Any) -> None:
            path = paths.get(id(module), type(module).__name__)
            region = self._region(path)
            self.stack.append((path, region))
            if region is not None:
                self.inside += 1
                if self.inside == 1:
                    self.__enter__()

        def post(_module: torch.nn.Module, _args: Any, _out: Any) -> None:
            if not self.stack:
                return
            _, region = self.stack.pop()
            if region is not None:
                self.inside -= 1
                if self.inside == 0:
                    self.__exit__(None, None, None)

        h1 = torch.nn.modules.module.register_module_forward_pre_hook(pre)
        h2 = torch.nn.modules.module.register_module_forward_hook(post, always_call=True)
        try:
            yield
        finally:
            h1.remove()
            h2.remove()
            while self.inside > 0:  # a run that raised inside a region
                self.inside -= 1
                if self.inside == 0:
                    self.__exit__(None, None, None)

    def divergences(self) -> tuple[Divergence, ...]:
        """Per region, the first recomputed call that differs from the forward (regions in order)."""
        found: dict[str, tuple[int, Divergence]] = {}
        for key, rank in sorted(self.order.items(), key=lambda kv: kv[1]):
            region = key[0]
            again = self.calls["backward"].get(key)
            if region in found or not again:
                continue  # not recomputed (early stop, or its own __call__ not rerun)
            d = _first_difference(region, self.calls["forward"][key], again)
            if d is not None:
                found[region] = (rank, d)
        return tuple(d for r in self.regions if r in found for d in [found[r][1]])


def _first_difference(region: str, fwd: list[_Call], again: list[_Call]) -> Divergence | None:
    # Early stop ends a recompute after its last saved tensor: compare the
    # common prefix of the first pass only. Later passes may be another
    # region's recompute running this module (a closure that late-binds it):
    # group testing, not this check, settles those.
    for i, (a, b) in enumerate(zip(fwd, again)):
        what = None
        if a.op != b.op:
            what = "path"
        elif a.shape != b.shape:
            what = "shape"
        elif a.dtype != b.dtype:
            what = "dtype"
        elif not _close(a.total, b.total, a.absolute) or not _close(a.absolute, b.absolute, a.absolute):
            what = "value"
        if what is not None:
            return Divergence(region, i, b.op, b.module, what, a.show(), b.show(), b.source or a.source)
    return None


def _close(x: float, y: float, scale: float) -> bool:
    if math.isinf(x) or math.isinf(y):
        return x == y
    return abs(x - y) <= _RTOL * max(scale, 1e-30) + 1e-12
