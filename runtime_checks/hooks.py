"""Side effects: how often every module hook runs, in the baseline and in the checkpointed run.

A checkpointed region's forward runs again in backward, and so do the
forward hooks and pre-hooks of every module inside it. Gradients can match
while an aux-loss tracker, an activation-statistics collector or a call
counter registered as a hook counts every step twice. ``HookCounter`` wraps
each hook for the duration of one run (module hooks of every submodule and
torch's global module hooks) and counts its calls; the wrappers are removed
after the run, leaving the original hook objects in place.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator, MutableMapping
from typing import Any

import torch

from runtime_checks import bypass
from runtime_checks.report import HookCalls

__all__ = ["HookCalls", "HookCounter", "differences"]

_MODULE_DICTS = {
    "_forward_pre_hooks": "forward pre-hook",
    "_forward_hooks": "forward hook",
    "_backward_pre_hooks": "backward pre-hook",
    "_backward_hooks": "backward hook",
}
# torch's global module hooks (register_module_forward_hook & co.); looked up
# by name and skipped where a release lacks one.
_GLOBAL_DICTS = {
    "_global_forward_pre_hooks": "global forward pre-hook",
    "_global_forward_hooks": "global forward hook",
    "_global_backward_pre_hooks": "global backward pre-hook",
    "_global_backward_hooks": "global backward hook",
}

HookKey = tuple[str, str, str]  # (module path or "global", kind, hook qualname#id)


def _hook_name(hook: Any, key: int) -> str:
    fn = getattr(hook, "func", hook)  # functools.partial
    qual = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    mod = getattr(fn, "__module__", None)
    return f"{mod}.{qual}#{key}" if mod and mod != "__main__" else f"{qual}#{key}"


class HookCounter:
    """Counts hook calls of one model during ``counting()`` blocks, one ``Counter`` per block."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.paths = bypass.module_paths(model)

    def _dicts(self) -> Iterator[tuple[str, str, MutableMapping[int, Any]]]:
        for mod in self.model.modules():
            path = self.paths.get(id(mod), type(mod).__name__)
            for attr, kind in _MODULE_DICTS.items():
                d = mod.__dict__.get(attr)
                if d:
                    yield path, kind, d
        globals_ns = vars(torch.nn.modules.module)
        for attr, kind in _GLOBAL_DICTS.items():
            d = globals_ns.get(attr)
            if isinstance(d, MutableMapping) and d:
                yield "global", kind, d

    @contextlib.contextmanager
    def counting(self) -> Iterator[Counter[HookKey]]:
        counts: Counter[HookKey] = Counter()
        swapped: list[tuple[MutableMapping[int, Any], int, Any, Any]] = []
        try:
            for path, kind, d in list(self._dicts()):
                for key, hook in list(d.items()):
                    name: HookKey = (path, kind, _hook_name(hook, key))
                    counts[name] += 0

                    def counted(*args: Any, __hook: Any = hook, __name: HookKey = name, **kwargs: Any) -> Any:
                        counts[__name] += 1
                        return __hook(*args, **kwargs)

                    d[key] = counted
                    swapped.append((d, key, hook, counted))
            yield counts
        finally:
            for d, key, hook, counted in reversed(swapped):
                if d.get(key) is counted:
                    d[key] = hook


def differences(baseline: Counter[HookKey], checkpointed: Counter[HookKey]) -> tuple[HookCalls, ...]:
    """Hooks whose call counts differ, in the order they were found."""
    out = []
    for key in dict.fromkeys(list(baseline) + list(checkpointed)):
        b, c = baseline.get(key, 0), checkpointed.get(key, 0)
        if b != c:
            path, kind, hook = key
            out.append(HookCalls(path, kind, hook.rsplit("#", 1)[0], b, c))
    return tuple(out)
