"""Process-wide switchboard that the patched checkpoint entry points consult.

``bypass.py`` swaps the ``__code__`` of torch's checkpoint function for
``_checkpoint_trampoline`` below. A swapped code object runs with *torch's*
module globals, not ours, so the trampoline cannot name anything from this
module directly: it imports this module (a ``sys.modules`` lookup) and hands
over. Everything stateful lives here, in one place, behind one lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__: list[str] = []

# Names that configure checkpoint itself rather than being forwarded to the
# checkpointed function. ``bypass.install`` extends this with every named
# parameter of the installed torch's signature, so a keyword added by a later
# release is never forwarded to the user's function.
CONTROL_KWARGS: set[str] = {
    "use_reentrant",
    "preserve_rng_state",
    "context_fn",
    "determinism_check",
    "debug",
    "early_stop",
    "respect_saved_tensors_hooks",
}


@dataclass
class Session:
    """What one ``verify`` run wants the checkpoint entry points to do.

    ``mode``: ``"record"`` runs checkpoint as it is and records each region;
    ``"bypass"`` calls the wrapped function directly, except for regions
    named in ``keep``, which still run under checkpoint.
    """

    namer: Callable[[Any], str]
    mode: str = "record"
    keep: frozenset[str] = frozenset()
    regions: list[str] = field(default_factory=list)
    # Innermost region being run directly (bypass mode); memory accounting
    # attributes saved tensors to it.
    stack: list[str] = field(default_factory=list)
    # Record mode, when not None: fingerprints of the inputs and outputs of
    # every call of every region invocation, keyed (region, n-th invocation
    # in this run) -> [forward, recompute, ...] (see ``fingerprint``).
    fingerprints: dict[tuple[str, int], list[Any]] | None = None
    _invocations: dict[str, int] = field(default_factory=dict)
    # Record mode: checkpoint calls that stash the RNG state (preserve_rng_state, the default),
    # memory checkpointing keeps until backward.
    rng_stashes: int = 0
    # Memory-counting (pack, unpack) hooks of a measured run: also installed innermost
    # around each region, so that hooks a model puts around its checkpoint calls
    # (``save_on_cpu`` offloading) cannot hide the region's saved tensors from the count.
    measure_hooks: tuple[Callable[[Any], Any], Callable[[Any], Any]] | None = None

    def __post_init__(self) -> None:
        if self.mode == "record" and self.fingerprints is None:
            self.fingerprints = {}

    def note(self, name: str) -> None:
        if name not in self.regions:
            self.regions.append(name)


_lock = threading.RLock()
_session: Session | None = None
# Filled by bypass.install: the original checkpoint function rebuilt from its
# saved code object, and its first parameter's name.
_original_checkpoint: Callable[..., Any] | None = None


def current() -> Session | None:
    return _session


def set_session(session: Session | None) -> None:
    global _session
    _session = session


def _split(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    """Separate the checkpointed function, its arguments and checkpoint's own options."""
    if args:
        function, fargs = args[0], args[1:]
    else:
        function, fargs = kwargs.get("function"), ()
    fkwargs = {k: v for k, v in kwargs.items() if k not in CONTROL_KWARGS and k != "function"}
    return function, fargs, fkwargs


def dispatch_checkpoint(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Entry point of every ``torch.utils.checkpoint.checkpoint`` call while installed."""
    original = _original_checkpoint
    assert original is not None
    session = _session
    function, fargs, fkwargs = _split(args, kwargs)
    # torch >= 2.14 decorator form ``checkpoint(use_reentrant=False)``: it only
    # builds a wrapper object; calls through that object are caught where
    # bypass.py patches the wrapper class.
    if session is None or function is None:
        return original(*args, **kwargs)

    if session.mode == "record" and kwargs.get("preserve_rng_state", True):
        session.rng_stashes += 1

    def checkpointed(fn: Any = function) -> Any:
        if args:
            return original(fn, *args[1:], **kwargs)
        return original(**{**kwargs, "function": fn})

    return _run_region(session, function, fargs, fkwargs, checkpointed)


def dispatch_decorated(obj: Any, original_call: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Entry point of calls through torch 2.14's ``@checkpoint(...)`` wrapper objects."""
    session = _session
    function = getattr(obj, "__wrapped__", None)
    if session is None or function is None:
        return original_call(obj, *args, **kwargs)
    # The wrapper object holds its function: calls through it are not fingerprinted.
    return _run_region(session, function, args, kwargs, lambda fn=None: original_call(obj, *args, **kwargs))


def _run_region(
    session: Session,
    function: Any,
    fargs: tuple[Any, ...],
    fkwargs: dict[str, Any],
    checkpointed: Callable[..., Any],
) -> Any:
    if session.measure_hooks is None:
        return _run_region_as_asked(session, function, fargs, fkwargs, checkpointed)
    import torch.autograd.graph

    with torch.autograd.graph.saved_tensors_hooks(*session.measure_hooks):
        return _run_region_as_asked(session, function, fargs, fkwargs, checkpointed)


def _run_region_as_asked(
    session: Session,
    function: Any,
    fargs: tuple[Any, ...],
    fkwargs: dict[str, Any],
    checkpointed: Callable[..., Any],
) -> Any:
    name = session.namer(function)
    if session.mode == "record":
        session.note(name)
        if session.fingerprints is None:
            return checkpointed()
        n = session._invocations.get(name, 0)
        session._invocations[name] = n + 1
        calls = session.fingerprints.setdefault((name, n), [])

        def fingerprinted(*a: Any, **k: Any) -> Any:
            seen = fingerprint((a, k))
            out = function(*a, **k)
            calls.append((seen, fingerprint(out)))  # 1st call: the forward; later calls: recomputes
            return out

        return checkpointed(fingerprinted)
    if name in session.keep:
        return checkpointed()
    session.stack.append(name)
    try:
        return function(*fargs, **fkwargs)
    finally:
        session.stack.pop()


def fingerprint(out: Any, depth: int = 0) -> list[Any]:
    """Per output tensor: (sum, sum of absolute values) in float64, computed without touching autograd."""
    import torch

    found: list[Any] = []
    if isinstance(out, torch.Tensor):
        if out.is_floating_point() or out.is_complex():
            with torch.no_grad():
                t = out.detach()
                t = t.abs() if t.is_complex() else t
                sums = torch.stack([t.sum(dtype=torch.float64), t.abs().sum(dtype=torch.float64)])
                found.append((sums, out.dtype, out.numel()))
    elif depth < 4 and isinstance(out, (tuple, list)):
        for v in out:
            found.extend(fingerprint(v, depth + 1))
    elif depth < 4 and isinstance(out, dict):
        for v in out.values():
            found.extend(fingerprint(v, depth + 1))
    return found


def _checkpoint_trampoline(*args, **kwargs):  # type: ignore[no-untyped-def]
    # Runs as torch.utils.checkpoint.checkpoint's code with torch's globals:
    # reach this module through the import system only.
    import runtime_checks._state as _rc_state

    return _rc_state.dispatch_checkpoint(args, kwargs)
