"""What discovery reports: a checkpoint site, and a callable that runs under checkpoint.

Records shared by :mod:`ckptlint.discovery.sites` (which finds them), the call classification in
:mod:`ckptlint.discovery.specs`, the container expansion in :mod:`ckptlint.discovery.containers`,
the engine and the rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import libcst as cst

from ckptlint.analysis.walk import walk
from ckptlint.infer import Instance
from ckptlint.infer.resolver import CallableRef, Ctx
from ckptlint.project import ModuleInfo

__all__ = ["CheckedCallable", "SiteCall", "Spec", "calls_in", "fn_arg", "kwarg"]


@dataclass(eq=False)
class SiteCall:
    """A call that checkpoints something."""

    call: cst.Call
    module: ModuleInfo
    kind: str  # checkpoint | sequential | seq | gc_func | wrapper | apply | paths | partial
    torch_api: bool  # torch's own checkpoint/checkpoint_sequential: CKP4xx apply
    name: str  # the callee as written, for messages
    ctx: Ctx
    # Keyword arguments bound by ``self.<attr> = partial(checkpoint, ...)``.
    bound_kwargs: dict[str, cst.BaseExpression] = field(default_factory=dict)

    def option(self, name: str) -> cst.BaseExpression | None:
        """A checkpoint option passed at the call or bound in its partial."""
        value = kwarg(self.call, name)
        return value if value is not None else self.bound_kwargs.get(name)


@dataclass(eq=False)
class CheckedCallable:
    """A function body that runs under checkpoint, with its input parameters.

    ``member`` instead names a library module (``nn.BatchNorm2d(8)``) placed
    directly in a checkpointed container: there is no body to walk, only the
    module call itself.
    """

    ref: CallableRef | None
    inputs: frozenset[str]
    site_module: ModuleInfo
    site_node: cst.CSTNode
    preserve_rng_state: bool = True
    via: str = "checkpoint"
    site_scope: str = ""  # short name of the function holding the site ("Model.forward")

    member: Instance | None = None
    label: str = ""  # for members: the checkpointed expression as written (``self.stem``)
    member_input: str = "input"  # for members: the checkpoint's input as written
    # For members: the site checkpoints this one module and nothing else (not
    # one member of a Sequential, not beside an in-tree block).
    member_alone: bool = False

    @property
    def name(self) -> str:
        if self.ref is not None:
            return self.ref.name
        return self.label or (self.member.short_name if self.member is not None else "?")


@dataclass
class Spec:
    """What kind of checkpoint call a call is, and where its callable sits among the arguments."""

    kind: str
    torch_api: bool
    fn_index: int = 0  # position of the checkpointed callable among the arguments
    name: str = "checkpoint"
    bound: dict[str, cst.BaseExpression] | None = None  # keywords bound by a partial(checkpoint, ...)
    skip: int = 0  # positional arguments between the callable and its inputs (megatron's flag)



def kwarg(call: cst.Call, name: str) -> cst.BaseExpression | None:
    for a in call.args:
        if a.keyword is not None and a.keyword.value == name:
            return a.value
    return None


def fn_arg(call: cst.Call, index: int) -> cst.BaseExpression | None:
    i = 0
    for a in call.args:
        if a.star:
            return None
        if a.keyword is None:
            if i == index:
                return a.value
            i += 1
    if index == 0:
        return kwarg(call, "function") or kwarg(call, "functions")
    return None


def calls_in(node: cst.CSTNode) -> Iterator[cst.Call]:
    for n in walk(node, into_defs=False):
        if isinstance(n, cst.Call):
            yield n

