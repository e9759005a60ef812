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

The pieces: :class:`ModelState` (here), :class:`RngState` and
``seed_everything`` (``_rng.py``), :class:`PyState` (``_pystate.py``); every
name is importable from this module.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

import torch

from runtime_checks._pystate import PyState
from runtime_checks._rng import RngState, seed_everything  # noqa: F401  (importable from here, as before)
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
