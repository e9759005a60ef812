"""Switching gradient checkpointing off (and recording where it happens).

Every route to checkpointing ends in one of two places:

* the function object behind ``torch.utils.checkpoint.checkpoint`` — reached
  through the module attribute, any alias or from-import, a
  ``functools.partial`` stored on a module (transformers' and diffusers'
  ``_gradient_checkpointing_func``, ``CheckpointWrapper.checkpoint_fn``),
  ``checkpoint_sequential`` and timm's ``checkpoint``/``checkpoint_seq``
  (which call it through the module attribute);
* on torch >= 2.14, the wrapper object that the decorator form
  ``@checkpoint(use_reentrant=False)`` builds, which calls torch's private
  implementation directly.

Aliases and partials hold the *function object*, so rebinding the module
attribute misses them. Instead we replace the ``__code__`` of the innermost
function (following ``__wrapped__`` through ``torch._disable_dynamo``) with a
trampoline: every holder of the object now runs our code. The original is
rebuilt as a fresh function from the saved code object, so "record" mode runs
exactly what torch would have run. The decorator's wrapper class is found by
building one (no private name needed) and its ``__call__`` is patched on the
class. Both are undone by ``uninstall``, which ``intercept`` calls in a
``finally``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import types
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.utils.checkpoint

from runtime_checks import _state

__all__ = ["bypass_checkpointing", "composable_regions", "installed", "intercept", "module_paths", "region_namer"]

_CHECKPOINT_WRAPPED_SUFFIX = "._checkpoint_wrapped_module"


class _Installed:
    """Bookkeeping for one installation (restored by ``uninstall``)."""

    def __init__(self) -> None:
        self.target: types.FunctionType | None = None
        self.saved_code: types.CodeType | None = None
        self.decorated_cls: type | None = None
        self.saved_call: Any = None
        self.depth = 0


_installed = _Installed()


def _innermost_checkpoint() -> types.FunctionType:
    fn: Any = torch.utils.checkpoint.checkpoint
    seen = 0
    while hasattr(fn, "__wrapped__") and seen < 10:
        fn = fn.__wrapped__
        seen += 1
    if not isinstance(fn, types.FunctionType):  # pragma: no cover - defensive
        raise RuntimeError(
            f"torch.utils.checkpoint.checkpoint resolves to {type(fn).__name__}, not a Python "
            f"function; ckptlint cannot bypass checkpointing on torch {torch.__version__}"
        )
    return fn


def _decorated_class(public: Callable[..., Any]) -> type | None:
    """The class torch's decorator form returns, or None where there is none (torch < 2.14)."""
    try:
        factory = public(use_reentrant=False)
        obj = factory(lambda: None)
    except Exception:
        return None
    cls = type(obj)
    if cls.__module__.startswith("torch") and "__call__" in cls.__dict__ and hasattr(obj, "__wrapped__"):
        return cls
    return None


def install() -> None:
    """Patch torch's checkpoint entry points to consult ``_state`` (re-entrant: nested calls count)."""
    with _state._lock:
        if _installed.depth:
            _installed.depth += 1
            return
        target = _innermost_checkpoint()
        original = types.FunctionType(
            target.__code__, target.__globals__, target.__name__, target.__defaults__, target.__closure__
        )
        original.__kwdefaults__ = dict(target.__kwdefaults__ or {}) or None
        original.__qualname__ = target.__qualname__
        params = list(inspect.signature(original).parameters.values())
        for p in params[1:]:
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                _state.CONTROL_KWARGS.add(p.name)
        if target.__closure__:
            # A code object with free variables cannot be swapped for one
            # without: refuse loudly rather than verify nothing.
            raise RuntimeError(
                f"torch {torch.__version__}: checkpoint is a closure; ckptlint cannot bypass it"
            )
        decorated = _decorated_class(torch.utils.checkpoint.checkpoint)
        _state._original_checkpoint = original
        _installed.target = target
        _installed.saved_code = target.__code__
        target.__code__ = _state._checkpoint_trampoline.__code__
        if decorated is not None:
            saved_call = decorated.__dict__["__call__"]

            @functools.wraps(saved_call)
            def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
                return _state.dispatch_decorated(self, saved_call, args, kwargs)

            _installed.decorated_cls = decorated
            _installed.saved_call = saved_call
            decorated.__call__ = __call__  # type: ignore[method-assign]
        _installed.depth = 1


def uninstall() -> None:
    """Undo ``install`` (the outermost one)."""
    with _state._lock:
        if not _installed.depth:
            return
        _installed.depth -= 1
        if _installed.depth:
            return
        if _installed.target is not None and _installed.saved_code is not None:
            _installed.target.__code__ = _installed.saved_code
        if _installed.decorated_cls is not None:
            _installed.decorated_cls.__call__ = _installed.saved_call  # type: ignore[method-assign]
        _installed.target = None
        _installed.saved_code = None
        _installed.decorated_cls = None
        _installed.saved_call = None
        _state._original_checkpoint = None


def installed() -> bool:
    """Whether torch's checkpoint is currently patched (for tests: always False after verify)."""
    return _installed.depth > 0


@contextlib.contextmanager
def intercept(session: _state.Session) -> Iterator[_state.Session]:
    """Patch checkpointing and route it through ``session`` for the duration of the block."""
    with _state._lock:
        install()
        previous = _state.current()
        _state.set_session(session)
        try:
            yield session
        finally:
            _state.set_session(previous)
            uninstall()


def region_namer(model: torch.nn.Module | None) -> Callable[[Any], str]:
    """Name a checkpointed callable by the module path it belongs to, else its qualname.

    Handles modules, bound methods (also ``partial(super().__call__, ...)`` as
    transformers builds it), partials, and closures that capture a module
    (``custom_forward``) or a slice of a module list (``checkpoint_sequential``,
    timm ``checkpoint_seq``).
    """
    paths = module_paths(model) if model is not None else {}

    def path_of(obj: Any) -> str | None:
        if isinstance(obj, torch.nn.Module):
            return paths.get(id(obj), type(obj).__name__)
        return None

    def name(fn: Any) -> str:
        seen = 0
        bound_to: Any = None
        while isinstance(fn, functools.partial) and seen < 10:
            # partial(Layer.forward, self, ...) — transformers >= 5 builds exactly this.
            if fn.args and isinstance(fn.args[0], torch.nn.Module) and bound_to is None:
                bound_to = fn.args[0]
            fn = fn.func
            seen += 1
        found = path_of(fn)
        if found is not None:
            return found
        owner = getattr(fn, "__self__", None)
        if owner is None and bound_to is not None and isinstance(fn, types.FunctionType):
            owner = bound_to
        if isinstance(owner, torch.nn.Module):
            method = getattr(fn, "__name__", "forward")
            base = path_of(owner) or type(owner).__name__
            return base if method in ("forward", "__call__", "_call_impl", "_wrapped_call_impl") else f"{base}:{method}"
        code = getattr(fn, "__code__", None)
        closure = getattr(fn, "__closure__", None)
        if code is not None and closure:
            cells: dict[str, Any] = {}
            for var, cell in zip(code.co_freevars, closure):
                try:
                    cells[var] = cell.cell_contents
                except ValueError:
                    continue
            modules = [path_of(v) for v in cells.values() if isinstance(v, torch.nn.Module)]
            modules = [m for m in modules if m is not None]
            if len(set(modules)) == 1:
                return modules[0]
            start, end = cells.get("start"), cells.get("end")
            for v in cells.values():
                if isinstance(v, (list, tuple, torch.nn.ModuleList, torch.nn.Sequential)) and isinstance(start, int) and isinstance(end, int):
                    items = list(v)
                    if 0 <= start <= end < len(items):
                        first = path_of(items[start]) or f"[{start}]"
                        last = path_of(items[end]) or f"[{end}]"
                        return first if start == end else f"{first}..{last}"
        qual = getattr(fn, "__qualname__", None) or type(fn).__qualname__
        mod = getattr(fn, "__module__", None)
        return f"{mod}.{qual}" if mod and mod != "__main__" else qual

    return name


def module_paths(model: torch.nn.Module) -> dict[int, str]:
    """``id(module)`` -> the path regions are named by (the root by its class name)."""
    paths: dict[int, str] = {}
    root = type(model).__name__
    for name, mod in model.named_modules(remove_duplicate=False):
        paths.setdefault(id(mod), _tidy(name) or root)
    return paths


def _tidy(path: str) -> str:
    return path.replace(_CHECKPOINT_WRAPPED_SUFFIX, "")


@contextlib.contextmanager
def bypass_checkpointing(model: torch.nn.Module | None = None) -> Iterator[list[str]]:
    """Run the block with every gradient checkpoint bypassed (functions called directly).

    Yields the list of region names bypassed so far (filled as the block runs;
    modules under ``torch.distributed._composable.checkpoint`` are listed up
    front, and need ``model`` to be found). Undone on exit, also when the
    block raises::

        with bypass_checkpointing(model):
            loss = model(x).sum()   # no checkpointing anywhere in here
    """
    session = _state.Session(namer=region_namer(model), mode="bypass")
    bypassed: list[str] = []
    original_namer = session.namer

    def namer(fn: Any) -> str:
        n = original_namer(fn)
        if n not in bypassed:
            bypassed.append(n)
        return n

    session.namer = namer
    composable = composable_regions(model) if model is not None else []
    for name, _, _ in composable:
        bypassed.append(name)
    with intercept(session), composable_control(composable, session):
        yield bypassed


def composable_regions(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module, Any]]:
    """Submodules under ``torch.distributed._composable.checkpoint`` (path, module, its state).

    That API checkpoints through forward hooks and torch's private generator,
    never through the public function; its per-module ``enable_hook`` switch
    (what torch itself flips during recompute) turns it off.
    """
    try:
        from torch.distributed._composable import checkpoint as composable
    except Exception:  # noqa: BLE001 - no torch.distributed in this build
        return []
    state_of = getattr(composable, "state", None)
    if state_of is None:
        return []
    namer = region_namer(model)
    found = []
    for mod in model.modules():
        try:
            st = state_of(mod)
        except Exception:  # noqa: BLE001 - a module the contract does not know
            continue
        if st is not None and getattr(st, "enable_hook", False):
            found.append((namer(mod), mod, st))
    return found


@contextlib.contextmanager
def composable_control(
    regions: list[tuple[str, torch.nn.Module, Any]], session: _state.Session
) -> Iterator[None]:
    """Apply ``session`` (record / bypass except ``keep``) to composable-checkpoint modules for the block."""
    handles = []
    switched = []
    try:
        for name, mod, st in regions:
            bypassed = session.mode != "record" and name not in session.keep
            if bypassed:
                st.enable_hook = False
                switched.append(st)

            def pre(_m: Any, _args: Any, _name: str = name, _bypassed: bool = bypassed) -> None:
                if session.mode == "record":
                    session.note(_name)
                elif _bypassed:
                    session.stack.append(_name)

            def post(_m: Any, _args: Any, _out: Any, _bypassed: bool = bypassed) -> None:
                if _bypassed and session.stack:
                    session.stack.pop()

            # Prepended, so it runs before the composable hook reads enable_hook.
            handles.append(mod.register_forward_pre_hook(pre, prepend=True))
            handles.append(mod.register_forward_hook(post, always_call=True))
        yield
    finally:
        for h in handles:
            h.remove()
        for st in switched:
            st.enable_hook = True
