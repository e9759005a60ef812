"""What verify builds its runs from: argument checks, the run's device, per-run
input copies, the submodules ``checkpoint=`` wraps, and saved-tensor counting.

``VerifyError`` lives here because these are the places that raise it; it is
importable from ``runtime_checks.verify`` (and ``runtime_checks``) as before.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.utils.checkpoint

__all__ = ["CheckpointSpec", "VerifyError"]

CheckpointSpec = Callable[[torch.nn.Module], bool] | type | str | Sequence[str]


class VerifyError(ValueError):
    """A usage error (bad argument); the message names the bad value."""


# Marks a module without an instance ``forward`` in ``_wrapped_modules``.
_ABSENT = object()


def _flatten(obj: Any, prefix: str, depth: int = 0) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor in a model output, with its path: tensors, tuples, dicts, dataclasses, ModelOutputs."""
    if depth > 8:
        return
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, Mapping):
        attr = dataclasses.is_dataclass(obj)
        for k, v in obj.items():
            yield from _flatten(v, f"{prefix}.{k}" if attr and isinstance(k, str) else f"{prefix}[{k!r}]", depth + 1)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _flatten(getattr(obj, f.name, None), f"{prefix}.{f.name}", depth + 1)
    elif isinstance(obj, tuple) and hasattr(obj, "_fields"):
        for fname, v in zip(obj._fields, obj):
            yield from _flatten(v, f"{prefix}.{fname}", depth + 1)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _flatten(v, f"{prefix}[{i}]", depth + 1)


def _fresh_inputs(
    inputs: Any, device: torch.device, dtype: torch.dtype | None
) -> tuple[tuple[Any, ...], dict[str, Any], list[tuple[str, torch.Tensor]]]:
    """Per-run copies of the input tensors, so a model that writes into its input cannot leak between runs."""
    leaves: list[tuple[str, torch.Tensor]] = []

    def copy(obj: Any, path: str, depth: int = 0) -> Any:
        if isinstance(obj, torch.Tensor):
            t = obj.detach().to(device=device, dtype=dtype if (dtype is not None and obj.is_floating_point()) else None)
            if t.data_ptr() == obj.data_ptr():  # .to() was a no-op: still the caller's storage
                t = t.clone()
            if obj.requires_grad:
                t.requires_grad_(True)
                leaves.append((path, t))
            return t
        if depth > 8:
            return obj
        if isinstance(obj, dict):
            return {k: copy(v, f"{path}[{k!r}]", depth + 1) for k, v in obj.items()}
        if isinstance(obj, list):
            return [copy(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(obj)]
        if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
            return tuple(copy(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(obj))
        return obj

    if isinstance(inputs, torch.Tensor):
        return (copy(inputs, "input"),), {}, leaves
    if isinstance(inputs, dict):
        kwargs = {}
        for k, v in inputs.items():
            if not isinstance(k, str):
                raise VerifyError(f"keyword inputs need string keys, got {k!r}")
            kwargs[k] = copy(v, f"input[{k!r}]")
        return (), kwargs, leaves
    if isinstance(inputs, (tuple, list)):
        return tuple(copy(v, f"input[{i}]") for i, v in enumerate(inputs)), {}, leaves
    raise VerifyError(
        f"inputs must be a tensor, a tuple/list of positional arguments or a dict of keyword arguments, "
        f"got {type(inputs).__name__}"
    )


def _checked_unpack(packed: tuple[torch.Tensor, int]) -> torch.Tensor:
    """Autograd's own in-place check, which it skips for tensors packed by saved-tensor hooks.

    Counting saved tensors through ``saved_tensors_hooks`` must not change
    what the model does: a model that modifies a saved tensor in place fails
    without checkpointing (and without verify) with this error, so it must
    fail here too, not pass silently.
    """
    t, version = packed
    if t._version != version:
        raise RuntimeError(
            "one of the variables needed for gradient computation has been modified by an inplace operation: "
            f"[{t.type()} {list(t.shape)}] is at version {t._version}; expected version {version} instead"
        )
    return t


def _storage_ptrs(tensors: Sequence[torch.Tensor]) -> set[int]:
    out = set()
    for t in tensors:
        try:
            out.add(t.untyped_storage().data_ptr())
        except Exception:
            continue
    return out


def _resolve_device(model: torch.nn.Module, device: str | torch.device | None) -> torch.device:
    if device is not None:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise VerifyError(f"device {device!r} is not a torch device: {exc}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise VerifyError(f"device {device!r} requested but CUDA is not available")
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        return dev
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def _select_modules(model: torch.nn.Module, spec: CheckpointSpec) -> list[torch.nn.Module]:
    """Submodules to checkpoint for ``checkpoint=``; descendants of a chosen module are skipped."""
    named = list(model.named_modules())
    if isinstance(spec, str):
        chosen = [(n, m) for n, m in named if n and type(m).__name__ == spec]
        what = f"class name {spec!r}"
    elif isinstance(spec, type):
        chosen = [(n, m) for n, m in named if n and isinstance(m, spec)]
        what = f"type {spec.__name__}"
    elif isinstance(spec, Sequence):
        chosen = []
        for name in spec:
            try:
                chosen.append((name, model.get_submodule(name)))
            except AttributeError:
                raise VerifyError(f"checkpoint=: model has no submodule {name!r}") from None
        what = "names"
    elif callable(spec):
        chosen = [(n, m) for n, m in named if n and spec(m)]
        what = f"predicate {_qualname(spec)!r}"
    else:
        raise VerifyError(
            f"checkpoint= must be a predicate, a module type, a class name or a list of submodule names, got {spec!r}"
        )
    if not chosen:
        raise VerifyError(f"checkpoint=: no submodule of {type(model).__name__} matches {what}")
    out: list[tuple[str, torch.nn.Module]] = []
    for name, mod in chosen:
        if any(name.startswith(p + ".") for p, _ in out):
            continue
        out.append((name, mod))
    return [m for _, m in out]


@contextlib.contextmanager
def _wrapped_modules(modules: list[torch.nn.Module], ckpt_kwargs: dict[str, Any]) -> Iterator[None]:
    """Checkpoint each module's forward for the duration (instance attribute, removed afterwards)."""
    saved: list[tuple[torch.nn.Module, Any]] = []
    try:
        for mod in modules:
            previous = mod.__dict__.get("forward", _ABSENT)
            inner = mod.forward

            def forward(*args: Any, __inner: Any = inner, **kwargs: Any) -> Any:
                return torch.utils.checkpoint.checkpoint(__inner, *args, **ckpt_kwargs, **kwargs)

            mod.__dict__["forward"] = forward
            saved.append((mod, previous))
        yield
    finally:
        for mod, previous in reversed(saved):
            if previous is _ABSENT:
                mod.__dict__.pop("forward", None)
            else:
                mod.__dict__["forward"] = previous


def _rng_state_bytes(use_cuda: bool) -> int:
    """Bytes one ``preserve_rng_state`` stash holds: the CPU generator's state (and the current CUDA one's)."""
    n = torch.get_rng_state().numel()
    if use_cuda:
        n += torch.cuda.get_rng_state().numel()
    return int(n)


def _check_tolerance(name: str, value: float | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise VerifyError(f"{name} must be a non-negative finite number, got {value!r}")


def _check_materialised(model: torch.nn.Module) -> None:
    for kind, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, t in named:
            if t.is_meta:
                raise VerifyError(
                    f"{kind} {name!r} is on the meta device (no values): materialise the model first "
                    "(model.to_empty(device=...) and initialise or load its weights)"
                )


_AUTOCAST = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


def _autocast_dtype(value: str | torch.dtype | None) -> torch.dtype | None:
    if value is None:
        return None
    if isinstance(value, torch.dtype) and value in (torch.bfloat16, torch.float16):
        return value
    if isinstance(value, str) and value in _AUTOCAST:
        return _AUTOCAST[value]
    raise VerifyError(f"autocast must be 'bf16', 'fp16', torch.bfloat16 or torch.float16, got {value!r}")


def _qualname(obj: Any) -> str:
    return getattr(obj, "__qualname__", None) or type(obj).__name__
