"""CKP403 reentrant-no-grad-inputs: reentrant checkpoint over inputs that cannot carry gradient.

What: a reentrant checkpoint (``use_reentrant=True``, or omitted, which
still runs reentrant) whose tensor arguments all provably cannot require
grad — each is ``t.detach()``, was computed under ``torch.no_grad()`` /
``torch.inference_mode()``, or is the output of a submodule the class froze
(``self.embed.requires_grad_(False)``, a ``p.requires_grad = False`` loop
over ``self.embed.parameters()``) — while the checkpointed callable is a
module / method with parameters of its own. Not flagged when a name is
turned back on (``x.requires_grad_()``, ``x.requires_grad = True``), when
the file registers ``enable_input_require_grads()`` /
``make_inputs_require_grad`` hooks (for frozen outputs), with
``use_reentrant=False``, or when one argument may require grad (a
parameter, a function input we cannot see). Training scripts that enable
reentrant checkpointing on a frozen / PEFT model are CKP406.

Why it breaks checkpointing: the reentrant variant runs the function under
``no_grad`` and rebuilds the graph in backward only from its *tensor
inputs*; when none requires grad its output does not either, so backward
never reaches the region and every parameter inside (LoRA adapters, a
trainable block behind a frozen embedding) silently gets **no gradient**.
PyTorch only warns "None of the inputs have requires_grad=True. Gradients
will be None", which users suppress as harmless (transformers#26221,
microsoft/LoRA#120, trl#3089).

How to fix: ``use_reentrant=False`` (the non-reentrant variant records the
graph of the parameters themselves), or make the input require grad
(``x.requires_grad_()``; for embeddings ``model.enable_input_require_grads()``).

Example::

    h = self.embed(ids)          # self.embed.requires_grad_(False) in __init__
    h = checkpoint(self.block, h, use_reentrant=True)    # CKP403: block's params get no grad
    h = checkpoint(self.block, h, use_reentrant=False)   # fine
"""

from __future__ import annotations

from typing import Iterator

import libcst as cst

from ckptlint.discovery.sites import SiteCall
from ckptlint.rules._grad_sources import REENABLERS, GradSources, frozen_submodules
from ckptlint.rules.base import Hit, RuleContext, literal

CODE = "CKP403"
NAME = "reentrant-no-grad-inputs"
MESSAGE = (
    "{func}(){of} runs reentrant ({how}) over inputs that cannot require grad ({why}): the reentrant variant "
    "backpropagates only through its tensor inputs, so the parameters of '{target}' get no gradient; "
    "pass use_reentrant=False, or make the input require grad ({fix})"
)
EVENT = "site"


def check(site: SiteCall, ctx: RuleContext) -> Iterator[Hit]:
    if site.kind not in ("checkpoint", "gc_func"):
        return
    how = _reentrant(site)
    if how is None:
        return
    checked = ctx.checked
    if checked is None or not _has_parameters(checked):
        return
    fn = site.ctx.fn
    if not isinstance(fn, cst.FunctionDef):
        return
    args = _tensor_args(site.call)
    if not args:
        return
    frozen = frozenset() if any(r in site.module.source for r in REENABLERS) else frozen_submodules(site.module, site.ctx.cls)
    sources = GradSources.of(fn, site.ctx.self_name, frozen, site.call)
    reasons: list[str] = []
    for arg in args:
        why = sources.why(arg)
        if why is None:
            return
        reasons.append(f"'{_text(arg)}': {why}")
    frozen_only = all("frozen" in r for r in reasons)
    fix = "model.enable_input_require_grads() for frozen embeddings" if frozen_only else "x.requires_grad_()"
    yield Hit(site.call, MESSAGE.format(
        func=site.name, of=ctx.of_callable, how=how, why="; ".join(reasons), target=checked.name, fix=fix,
    ))


def _reentrant(site: SiteCall) -> str | None:
    value = site.option("use_reentrant")
    if value is None:
        if site.torch_api and not any(a.star == "**" for a in site.call.args):
            return "use_reentrant omitted"
        return None
    return "use_reentrant=True" if literal(value) is True else None


def _has_parameters(checked) -> bool:  # CheckedCallable
    if checked.member is not None:
        return True
    ref = checked.ref
    return ref is not None and (ref.bound or ref.cls is not None or ref.outer is not None)


def _tensor_args(call: cst.Call) -> list[cst.BaseExpression]:
    """Positional arguments after the function, minus literals and ``None`` (None if ``*args``)."""
    out: list[cst.BaseExpression] = []
    positional = [a for a in call.args if a.keyword is None]
    if any(a.star for a in call.args):
        return []
    for a in positional[1:]:
        v = a.value
        if isinstance(v, (cst.Integer, cst.Float, cst.SimpleString)) or (isinstance(v, cst.Name) and v.value in ("None", "True", "False")):
            continue
        out.append(v)
    return out


def _text(expr: cst.BaseExpression) -> str:
    code = cst.Module(body=[]).code_for_node(expr)
    return code if len(code) <= 40 else code[:37] + "..."


VALID = [
    """
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.embed.requires_grad_(False)
        self.block = nn.Linear(8, 8)

    def forward(self, ids, x):
        h = self.embed(ids)
        a = checkpoint(self.block, h, use_reentrant=False)
        b = checkpoint(self.block, x, use_reentrant=True)
        d = x.detach()
        d.requires_grad_()
        c = checkpoint(self.block, d, use_reentrant=True)
        return a + b + c
""",
]

INVALID = [
    """
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.embed.requires_grad_(False)
        self.block = nn.Linear(8, 8)

    def forward(self, ids, x):
        h = self.embed(ids)
        a = checkpoint(self.block, h, use_reentrant=True)  # expect: CKP403
        with torch.no_grad():
            feats = self.block(x)
        b = checkpoint(self.block, feats, use_reentrant=True)  # expect: CKP403
        return checkpoint(self.block, x.detach(), use_reentrant=True)  # expect: CKP403
""",
]
