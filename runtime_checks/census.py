"""Which regions were checkpointed, and how many times each was recomputed per backward.

Checkpointing is right when each region's forward runs exactly twice per
step: once in the forward, once recomputed in backward. The census counts
both, for the checkpointed run only:

* *entries*: calls of torch's checkpoint for the region (through the region
  namer, which the dispatch consults once per call);
* *calls*: calls of the first module the region's function calls, through a
  global forward pre-hook (``torch.nn.modules.module.register_module_forward_pre_hook``,
  public), split into the forward phase and the backward phase (recomputes).

``recomputes`` = backward calls / forward calls. ``0``: checkpoint ran but
backward never needed the region (no input and no parameter inside it needed
a gradient, as with reentrant checkpoint on frozen inputs, or its outputs do
not reach the loss): the checkpoint buys nothing, or silently costs the
parameters their gradients. ``2`` or more: the region is checkpointed twice,
nested (a library's ``gradient_checkpointing_enable()`` under
``apply_activation_checkpointing``); the forward then runs three times.
A region whose function calls no module is listed with ``recomputes=None``:
its calls cannot be counted from outside.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from runtime_checks import bypass
from runtime_checks.report import Mismatch, RegionCensus

__all__ = ["Census", "RegionCensus", "localise_by_owner", "owning_region"]


class Census:
    """Counts checkpoint entries and module calls per phase for one run."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.paths = bypass.module_paths(model)
        self.known = set(self.paths.values())
        self.phase = "forward"
        # Keyed by module identity: a wrapper and the module it wraps share a path.
        self.calls: dict[str, Counter[int]] = {"forward": Counter(), "backward": Counter()}
        self.entries: Counter[str] = Counter()
        # Region -> the first module its function called in the forward. A
        # recompute always starts from the beginning (early stop only cuts
        # its end), and library layers may run their forward without their
        # own __call__ (partial(Layer.forward, self)): the first module called
        # inside is what is counted.
        self.first: dict[str, int] = {}
        self.pending: list[str] = []

    def counting_namer(self, namer: Callable[[Any], str]) -> Callable[[Any], str]:
        """``namer`` that also counts one entry per call (the dispatch names every checkpoint call once)."""

        def name(fn: Any) -> str:
            n = namer(fn)
            if self.phase == "forward":
                self.entries[n] += 1
                if n not in self.first:
                    self.pending.append(n)
            return n

        return name

    def backward(self) -> None:
        """From now on calls are recomputes."""
        self.phase = "backward"
        self.pending.clear()

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """Count module calls for the block (a global forward pre-hook, removed on exit)."""
        paths = self.paths

        def pre(module: torch.nn.Module, _args: Any) -> None:
            path = paths.get(id(module))
            if path is None:
                return
            self.calls[self.phase][id(module)] += 1
            if self.pending:
                for region in self.pending:
                    inside = region not in self.known or path == region or path.startswith(region + ".")
                    if inside:
                        self.first.setdefault(region, id(module))
                self.pending = [r for r in self.pending if r not in self.first]

        handle = torch.nn.modules.module.register_module_forward_pre_hook(pre)
        try:
            yield
        finally:
            handle.remove()

    def result(self, regions: list[str]) -> tuple[RegionCensus, ...]:
        fwd, bwd = self.calls["forward"], self.calls["backward"]
        out = []
        for name in regions:
            base = name.split("..", 1)[0]  # checkpoint_sequential slices: their first module
            inside = [
                key for key, path in self.paths.items()
                if fwd[key] and (path == base or path.startswith(base + "."))
            ] if base in self.known else []
            if not inside and name in self.first:
                inside = [self.first[name]]
            if not inside:  # a function that calls no module: not countable from outside
                out.append(RegionCensus(name, self.entries[name], None, None))
                continue
            first = self.first.get(name, inside[0])
            # The most recomputed module inside: a nested checkpoint may rerun
            # only the inner part (the wrapper's own __call__ runs once).
            again = max(round(bwd[k] / fwd[k]) for k in inside)
            out.append(RegionCensus(name, self.entries[name], fwd[first], again))
        return tuple(out)


def owning_region(name: str, regions: Iterable[str]) -> str | None:
    """The innermost region whose module path contains the parameter or buffer ``name``."""
    best: str | None = None
    for region in regions:
        base = region.split("..", 1)[0]
        if name.startswith(base + ".") and (best is None or len(base) > len(best.split("..", 1)[0])):
            best = region
    return best


def localise_by_owner(
    mismatches: list[Mismatch], regions: list[str], census: tuple[RegionCensus, ...]
) -> tuple[list[Mismatch], list[Mismatch]]:
    """Mismatches whose region follows from who owns the value, and the rest (found by running).

    A buffer that ends differently was written by its own module's forward,
    run again by the recompute of the region holding it. A parameter without
    a gradient inside a region that backward never recomputed lost it there
    (reentrant checkpoint with no input requiring grad). Neither needs a run.
    """
    silent = {c.name for c in census if c.recomputes == 0}
    owned, rest = [], []
    for m in mismatches:
        region = owning_region(m.name, regions) if m.kind in ("buffer", "missing_grad") else None
        if region is not None and (m.kind == "buffer" or region in silent):
            owned.append(dataclasses.replace(m, region=region))
        else:
            rest.append(m)
    return owned, rest
