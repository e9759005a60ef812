"""Checkpointed run versus bypassed run: outputs, gradients, buffers, RNG and state.

Order of work (memory: one stored set of gradients besides the live one):

1. snapshot everything (``snapshot.py``), take existing ``.grad`` aside;
1b. a forward-only checkpointed run counts its saved tensors (and warms up);
2. baseline run (every checkpoint bypassed; saved tensors counted): kept
   as the reference;
3. checkpointed run (the model as it is, regions recorded): compared;
4. only if something differs: a second baseline run gives the noise floor
   for the differing values, and what the baseline shows against itself is
   dropped;
6. if a difference remains and there are several regions, group-test
   subsets of regions (all others bypassed) to name the ones responsible;
7. restore everything, also when anything above raised.

Each run starts from the same parameters, buffers, Python state and seeded
RNG, so a hazard shows up as a difference and the baseline agrees with itself.

The work is split across private modules: ``_engine.py`` (the runs and their
order), ``_compare.py`` (tolerances, noise, mismatches), ``_setup.py``
(arguments, devices, input copies); this module holds ``verify`` itself and
keeps the names other code imports from ``runtime_checks.verify``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch

from runtime_checks import _state, bypass
from runtime_checks._compare import (  # noqa: F401  (importable from here, as before)
    NOISE_MARGIN,
    Key,
    _Tolerance,
    _within,
    _within_magnitude,
)
from runtime_checks._engine import _Engine
from runtime_checks._setup import (  # noqa: F401  (importable from here, as before)
    CheckpointSpec,
    VerifyError,
    _autocast_dtype,
    _check_materialised,
    _check_tolerance,
    _flatten,
    _fresh_inputs,
    _qualname,
    _resolve_device,
    _select_modules,
    _wrapped_modules,
)
from runtime_checks.report import Report
from runtime_checks.snapshot import (
    ModelState,
    ParameterWriteError,
    PyState,
    RngState,
    SnapshotError,
)

__all__ = ["ParameterWriteError", "VerifyError", "verify"]


def verify(
    model: torch.nn.Module | Callable[[], torch.nn.Module],
    inputs: Any,
    *,
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
    checkpoint: CheckpointSpec | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    seed: int = 0,
    localize: bool = True,
    checkpoint_kwargs: Mapping[str, Any] | None = None,
    snapshot_params: bool | Literal["disk"] = "disk",
    allow_no_checkpoint: bool = False,
    autocast: str | torch.dtype | None = None,
) -> Report:
    """Compare ``model`` as it checkpoints against the same model with checkpointing bypassed.

    ``model``: an ``nn.Module`` or a zero-argument factory returning one.
    ``inputs``: a tensor, a tuple/list of positional arguments or a dict of
    keyword arguments (nested containers allowed, non-tensors passed through).
    ``checkpoint``: for a model that does not checkpoint itself — a predicate
    on modules, a module class, a class name, or a list of submodule names;
    those submodules are checkpointed (``checkpoint_kwargs``, default
    ``use_reentrant=False``) in the checkpointed run only.
    ``loss_fn(outputs) -> scalar`` replaces the default loss, a seeded random
    projection of every floating-point output.
    ``rtol``/``atol`` replace the dtype defaults of ``torch.testing.assert_close``;
    either way a difference the baseline shows against itself is never reported.
    ``localize=False`` skips the search for the responsible regions.
    ``allow_no_checkpoint=True`` accepts a model in which no checkpoint
    region ran (by default that is not a pass: checkpointing is off).
    ``autocast="bf16"`` (or ``"fp16"``, or the torch dtype) runs forward and
    loss of both runs under ``torch.autocast`` on the run's device type, and
    compares with that dtype's tolerances.
    ``snapshot_params`` decides how a model that writes to its own parameters
    during the step is undone: ``"disk"`` (default) saves them to a temporary
    file and reads back only what was written (no extra memory); ``True``
    copies them in memory; ``False`` keeps nothing, and a write raises
    ``ParameterWriteError``.

    The model is left exactly as found: parameters, buffers, ``.grad``,
    ``requires_grad``, training mode, device, RNG states and the Python state
    the snapshot covers. An exception raised by the baseline is re-raised;
    one raised only by the checkpointed run is a mismatch of kind ``error``.
    """
    if not isinstance(model, torch.nn.Module):
        if not callable(model):
            raise VerifyError(f"model must be an nn.Module or a zero-argument factory, got {type(model).__name__}")
        built = model()
        if not isinstance(built, torch.nn.Module):
            raise VerifyError(f"model factory {_qualname(model)!r} returned {type(built).__name__}, not an nn.Module")
        model = built
    if snapshot_params not in (True, False, "disk"):
        raise VerifyError(f"snapshot_params must be 'disk', True or False, got {snapshot_params!r}")
    if loss_fn is not None and not callable(loss_fn):
        raise VerifyError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise VerifyError(f"dtype must be a torch.dtype, got {dtype!r}")
    _check_tolerance("rtol", rtol)
    _check_tolerance("atol", atol)
    _check_materialised(model)
    run_device = _resolve_device(model, device)
    autocast_dtype = _autocast_dtype(autocast)
    ckpt_kwargs = {"use_reentrant": False, **dict(checkpoint_kwargs or {})}
    wrap = _select_modules(model, checkpoint) if checkpoint is not None else []

    use_cuda = run_device.type == "cuda"
    if use_cuda:
        torch.cuda.init()  # so that the RNG snapshot below covers the CUDA generators
    rng0 = RngState.capture()
    mstate = ModelState.capture(model)
    pystate = PyState(model)
    with _state._lock:
        previous_session = _state.current()
        try:
            mstate.detach_grads()
            needs_move = any(p.device != run_device for _, p in mstate.params) or dtype is not None
            needs_move = needs_move or any(
                b is not None and b.device != run_device for b in mstate.buffer_objects
            )
            mstate.move(run_device if needs_move else None, dtype)
            try:
                mstate.clone_values(params=snapshot_params)
            except SnapshotError as exc:
                raise VerifyError(str(exc)) from None
            bypass.install()
            try:
                engine = _Engine(
                    model, inputs, mstate, pystate, run_device, dtype, loss_fn, wrap, ckpt_kwargs, rtol, atol, seed
                )
                engine.allow_no_checkpoint = allow_no_checkpoint
                engine.autocast = autocast_dtype
                try:
                    return engine.run(localize)
                except ParameterWriteError:
                    raise
                except Exception as exc:
                    # Without a copy, a write that a raising model made is
                    # still the thing the user must hear about first.
                    try:
                        mstate.check_unwritten()
                    except ParameterWriteError as write:
                        raise write from exc
                    raise
            finally:
                _state.set_session(previous_session)
                bypass.uninstall()
        finally:
            pystate.restore()
            mstate.restore()
            rng0.restore()
