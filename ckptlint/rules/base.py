"""What a rule sees and returns.

A rule module declares ``CODE``, ``NAME``, ``MESSAGE``, ``EVENT`` (``call``,
``write``, ``global``, ``site``, ``module`` or ``file``), a ``check(event, ctx)`` generator of
:class:`Hit` and its ``VALID``/``INVALID`` examples. Rules never parse and
never print: the engine feeds them events from the flow analysis and turns
hits into findings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import libcst as cst

from ckptlint.analysis.flow import Root, Visit
from ckptlint.discovery.sites import CheckedCallable, SiteCall
from ckptlint.project import ModuleInfo, Project
from ckptlint.types import Edit, Fix

__all__ = [
    "EditSpec", "Hit", "RuleContext", "describe", "edits_fix", "kwarg", "literal", "replace_node_fix",
]

FixBuilder = Callable[[ModuleInfo], "Fix | None"]


@dataclass
class Hit:
    """A hazard at ``node``; ``fix`` builds the rewrite once positions are known."""

    node: cst.CSTNode
    message: str
    fix: FixBuilder | None = None


@dataclass
class RuleContext:
    """The checked callable, the function being walked and the site label."""

    checked: CheckedCallable | None
    visit: Visit | None
    label: str | Callable[[], str]  # "path:line" of the site, computed on first use
    site: SiteCall | None = None
    project: Project | None = None
    sites: Sequence[SiteCall] = ()  # for whole-file rules: the file's checkpoint calls

    @property
    def site_label(self) -> str:
        if callable(self.label):
            self.label = self.label()
        return self.label

    @property
    def function(self) -> cst.CSTNode | None:
        """The body being walked (a function or lambda node), when there is one."""
        return self.visit.ref.node if self.visit is not None else None

    @property
    def of_callable(self) -> str:
        """`` of 'Block.forward'`` for site findings whose callable is known, else ``""``."""
        return f" of '{self.checked.name}'" if self.checked is not None else ""

    @property
    def callable_name(self) -> str:
        return self.checked.name if self.checked is not None else "?"

    @property
    def preserve_rng_state(self) -> bool:
        return self.checked.preserve_rng_state if self.checked is not None else True

    @property
    def where(self) -> str:
        """``of checkpointed 'Block.forward' (checkpointed at m.py:3[, via A -> B])``."""
        via = ""
        if self.visit is not None and len(self.visit.chain) > 1:
            via = ", via " + " -> ".join(self.visit.chain)
        how = ""
        if self.checked is not None and self.checked.via == "GradientCheckpointingLayer":
            how = " by GradientCheckpointingLayer"
        return f"of checkpointed '{self.callable_name}' (checkpointed{how} at {self.site_label}{via})"

    @property
    def inside(self) -> str:
        """``in checkpointed 'Block.forward' (checkpointed at m.py:3[, via A -> B])``."""
        return "in" + self.where[2:]


def describe(root: Root, written: str) -> str:
    """``input 'x'`` or ``'h' (alias of input 'x')``."""
    if root.origin is None or root.origin == written:
        return f"input '{written}'"
    return f"'{written}' (alias of input '{root.origin}')"


def kwarg(call: cst.Call, name: str) -> cst.Arg | None:
    for a in call.args:
        if a.keyword is not None and a.keyword.value == name:
            return a
    return None


def literal(expr: cst.BaseExpression | None) -> bool | None:
    from ckptlint.infer.lattice import literal_truth

    return literal_truth(expr)


def replace_node_fix(
    node: cst.CSTNode, new_node: cst.CSTNode, description: str, applicability: str
) -> FixBuilder:
    """A fix replacing exactly ``node``'s source range with ``new_node``'s code."""

    def build(mod: ModuleInfo) -> Fix | None:
        pos = mod.position(node)
        if pos is None:
            return None
        text = mod.code_for(new_node)
        edit = Edit(pos.start.line, pos.start.column, pos.end.line, pos.end.column, text)
        return Fix(description, applicability, (edit,))  # type: ignore[arg-type]

    return build


EditSpec = tuple[str, cst.CSTNode, str]  # ("before" | "after" | "replace", node, text)


def edits_fix(specs: list[EditSpec], description: str, applicability: str) -> FixBuilder:
    """A fix made of small edits anchored on nodes (keeps the surrounding layout intact).

    ``("before", node, text)`` inserts at the node's start, ``("after", ...)`` at its end,
    ``("replace", ...)`` replaces exactly the node's range.
    """

    def build(mod: ModuleInfo) -> Fix | None:
        edits: list[Edit] = []
        for kind, node, text in specs:
            pos = mod.position(node)
            if pos is None:
                return None
            if kind == "before":
                edits.append(Edit(pos.start.line, pos.start.column, pos.start.line, pos.start.column, text))
            elif kind == "after":
                edits.append(Edit(pos.end.line, pos.end.column, pos.end.line, pos.end.column, text))
            else:
                edits.append(Edit(pos.start.line, pos.start.column, pos.end.line, pos.end.column, text))
        return Fix(description, applicability, tuple(sorted(edits)))  # type: ignore[arg-type]

    return build
