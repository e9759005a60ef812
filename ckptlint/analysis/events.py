"""What the flow analysis reports to rules: events and the roots of their targets."""

from __future__ import annotations

from dataclasses import dataclass

import libcst as cst

from ckptlint.infer.lattice import Instance
from ckptlint.infer.resolver import CallableRef
from ckptlint.project import ModuleInfo

__all__ = ["LOCAL", "UNKNOWN", "CallEvent", "Event", "GlobalWriteEvent", "Returns", "Root", "Visit", "WriteEvent"]


@dataclass(frozen=True)
class Root:
    """What the base variable of an expression is, seen from the function."""

    kind: str  # input | self | global | closure | outer | module | local | unknown
    name: str  # the variable as written
    origin: str | None = None  # for ``input``: the checkpoint input it aliases
    qualnames: tuple[str, ...] = ()  # for ``module``: qualified names of the whole expression
    through_attribute: bool = False  # reached via ``.attr`` (not a view attribute)
    # The expression is the function's own ``*args``/``**kwargs`` container:
    # built fresh for every call, so mutating the container itself is harmless.
    fresh_container: bool = False


LOCAL = Root("local", "")
UNKNOWN = Root("unknown", "")


@dataclass
class CallEvent:
    call: cst.Call
    stmt: cst.CSTNode
    qualnames: tuple[str, ...]
    method: str | None
    receiver: Root | None
    args: tuple[tuple[str | None, cst.BaseExpression, Root, str], ...]  # keyword, value, root, star
    instances: tuple[Instance, ...]
    is_statement: bool
    in_with: bool
    receiver_instances: tuple[Instance, ...] = ()  # objects a method is called on (``self.rng``)


@dataclass
class WriteEvent:
    target: cst.BaseExpression
    stmt: cst.CSTNode
    kind: str  # assign | aug | del
    root: Root
    aug: cst.AugAssign | None = None
    target_qualnames: tuple[str, ...] = ()
    # Inside ``if self.x is None: self.x = ...``-style fill-once blocks: the
    # recompute finds the state already filled and writes nothing new.
    memoized: bool = False
    # ... and the value filled in computes with a checkpoint input's values: the recompute skips it.
    from_inputs: bool = False


@dataclass
class GlobalWriteEvent:
    name: str
    target: cst.BaseExpression
    stmt: cst.CSTNode
    keyword: str  # global | nonlocal
    memoized: bool = False  # inside a fill-once block (``if _EXT is None: _EXT = ...``)
    from_inputs: bool = False  # ... filled from the checkpointed call's input values


Event = CallEvent | WriteEvent | GlobalWriteEvent


@dataclass
class Visit:
    """One analysed function body: where events come from."""

    ref: CallableRef
    module: ModuleInfo
    chain: tuple[str, ...]
    taint: dict[str, str]  # parameter -> checkpoint input it carries


@dataclass
class Returns:
    """Which inputs a function's return value may alias (whole, or per tuple element)."""

    whole: str | None = None
    elements: list[str | None] | None = None

    def merge(self, other: Returns) -> None:
        self.whole = self.whole or other.whole
        if other.elements is not None:
            if self.elements is None:
                self.elements = list(other.elements)
            elif len(self.elements) == len(other.elements):
                self.elements = [a or b for a, b in zip(self.elements, other.elements)]
