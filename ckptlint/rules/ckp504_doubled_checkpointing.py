"""CKP504 doubled-checkpointing: the same region checkpointed twice.

What, in two shapes that one file makes certain:

- a region checkpointed (torch's ``checkpoint``, ``checkpoint_wrapper(...)``,
  ``apply_activation_checkpointing(check_fn=...)``, a library's
  ``_gradient_checkpointing_func``) whose own body again returns
  ``checkpoint(self._forward, x)`` / ``checkpoint(super().forward, x)`` — a
  method of the same object — on the region's own, unchanged inputs: the
  inner checkpoint covers exactly the outer region;
- ``model.gradient_checkpointing_enable()`` (transformers' switch, which
  checkpoints every decoder/encoder layer) and
  ``apply_activation_checkpointing(model, check_fn=lambda m: isinstance(m,
  XLayer))`` with a class named ``...Layer`` / ``...Block`` on the same
  ``model`` in the same function (or module body).

Why it only costs time: the outer checkpoint already frees the region's
activations and reruns it in backward, so the inner one has nothing left to
free. Measured (torch 2.13, CPU, a Linear-GELU-Linear block checkpointed
around a ``checkpoint(self._forward, x)``): with reentrant checkpoints the
region runs **three** times per step instead of two (the inner one reruns it
again during the outer recompute); non-reentrant torch recomputes the nested
pair in one pass (two runs, with or without early stop) but still stashes
the RNG state and installs its saved-tensor hooks twice. ``runtime_checks.apply_plan`` refuses to add a checkpoint to a
module that already has one for the same reason.

Limits: a nested checkpoint of a *part* of the region (``checkpoint(self.attn,
x)`` inside a checkpointed block) is hierarchical checkpointing, a real
memory/time trade-off, and is not flagged; nor are a ``check_fn`` choosing
other classes, ``TrainingArguments(gradient_checkpointing=True)`` combined with
``apply_activation_checkpointing``, a model switched on in one file and
wrapped in another, or inner checkpoints reached through helper functions.

How to fix: keep one of the two — the library switch or the wrapper, the
outer checkpoint or the inner one.

Example::

    model.gradient_checkpointing_enable()
    apply_activation_checkpointing(model, check_fn=lambda m: isinstance(m, LlamaDecoderLayer))   # CKP504
"""

from __future__ import annotations

from typing import Iterator

import libcst as cst

from ckptlint.analysis import names as N
from ckptlint.discovery.sites import SiteCall
from ckptlint.infer.resolver import CallableRef
from ckptlint.project import dotted_name
from ckptlint.rules._efficiency import body_nodes, walk_own
from ckptlint.rules.base import Hit, RuleContext, kwarg

CODE = "CKP504"
NAME = "doubled-checkpointing"
MESSAGE = "{func}() checkpoints {region}, which {again}: the region is freed and recomputed twice over, so memory is no lower and the inner checkpoint only adds overhead (reentrant: the region runs three times instead of two); keep one of the two checkpoints"
EVENT = "site"

_INNER = N.TORCH_CHECKPOINT_NAMES - N.CHECKPOINT_SEQUENTIAL
_GC_ENABLE = "gradient_checkpointing_enable"


def _params(fn: cst.FunctionDef) -> set[str]:
    p = fn.params
    return {x.name.value for x in (*p.posonly_params, *p.params, *p.kwonly_params)}


def _assigned(fn: cst.FunctionDef) -> set[str]:
    out: set[str] = set()
    for node in body_nodes(fn):
        targets: list[cst.BaseExpression] = []
        if isinstance(node, cst.Assign):
            targets = [t.target for t in node.targets]
        elif isinstance(node, (cst.AugAssign, cst.AnnAssign)):
            targets = [node.target]
        out.update(t.value for t in targets if isinstance(t, cst.Name))
    return out


def _own_method(expr: cst.BaseExpression, ref: CallableRef, self_name: str) -> str | None:
    """``self.<method of the class>`` or ``super().<name>``: the object's own code, as written."""
    if not isinstance(expr, cst.Attribute):
        return None
    base = expr.value
    if isinstance(base, cst.Call) and isinstance(base.func, cst.Name) and base.func.value == "super":
        return f"super().{expr.attr.value}"
    if isinstance(base, cst.Name) and base.value == self_name and ref.cls is not None and expr.attr.value in ref.cls.methods:
        return f"{self_name}.{expr.attr.value}"
    return None


def _inner_same_region(ref: CallableRef) -> str | None:
    """The inner checkpoint call of ``ref``'s body that recomputes the whole region, as written."""
    fn = ref.node
    if not isinstance(fn, cst.FunctionDef) or ref.cls is None or not fn.params.params:
        return None
    self_name = fn.params.params[0].name.value
    inputs = _params(fn) - {self_name}
    changed = _assigned(fn)
    imports = ref.module.imports
    for node in body_nodes(fn):
        if not isinstance(node, cst.Return) or not isinstance(node.value, cst.Call):
            continue
        call = node.value
        written = dotted_name(call.func) or ""
        head, _, rest = written.partition(".")
        quals = [f"{t}.{rest}" if rest else t for t in imports.get(head, [])]
        is_gc = isinstance(call.func, cst.Attribute) and call.func.attr.value == N.GC_FUNC_ATTR
        if not (N.matches(quals, _INNER) or is_gc) or not call.args or call.args[0].keyword is not None:
            continue
        own = _own_method(call.args[0].value, ref, self_name)
        rest_args = [a for a in call.args[1:] if a.keyword is None]
        if own and all(isinstance(a.value, cst.Name) and a.value.value in inputs - changed and not a.star for a in rest_args):
            return f"{written}({own}, ...)"
    return None


def _layer_check_fn(call: cst.Call) -> str | None:
    """The class a ``check_fn=lambda m: isinstance(m, XLayer)`` selects, when it names a layer/block."""
    check_fn = kwarg(call, "check_fn")
    fn = check_fn.value if check_fn is not None else None
    if not isinstance(fn, cst.Lambda) or not isinstance(fn.body, cst.Call):
        return None
    body = fn.body
    if not (isinstance(body.func, cst.Name) and body.func.value == "isinstance" and len(body.args) == 2):
        return None
    cls = dotted_name(body.args[1].value) or ""
    short = cls.rsplit(".", 1)[-1]
    return short if short.endswith(("Layer", "Block")) else None


def _library_switch(site: SiteCall) -> str | None:
    """``X.gradient_checkpointing_enable(...)`` on the model ``apply_activation_checkpointing(X, ...)`` wraps."""
    if not site.call.args or site.call.args[0].keyword is not None or _layer_check_fn(site.call) is None:
        return None
    target = dotted_name(site.call.args[0].value)
    fn = site.ctx.fn
    nodes = body_nodes(fn) if isinstance(fn, cst.FunctionDef) else walk_own(site.module.module.body)
    for node in nodes:
        if (isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute)
                and node.func.attr.value == _GC_ENABLE and target is not None and dotted_name(node.func.value) == target):
            return target
    return None


def check(site: SiteCall, ctx: RuleContext) -> Iterator[Hit]:
    if site.kind == "apply":
        target = _library_switch(site)
        if target is not None:
            layer = _layer_check_fn(site.call)
            yield Hit(site.call, MESSAGE.format(
                func=site.name, region=f"every {layer} of {target}",
                again=f"{target}.{_GC_ENABLE}() already checkpoints (transformers' switch)"))
            return
    if site.kind not in ("checkpoint", "gc_func", "wrapper", "apply"):
        return
    ref = ctx.checked.ref if ctx.checked is not None else None
    if ref is None:
        return
    inner = _inner_same_region(ref)
    if inner is not None:
        yield Hit(site.call, MESSAGE.format(func=site.name, region=ref.name, again=f"checkpoints itself again with {inner}"))


VALID = [
    """
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn, self.mlp = nn.Linear(8, 8), nn.Linear(8, 8)

    def _mlp(self, x):
        return self.mlp(x)

    def forward(self, x):
        h = x + self.attn(x)
        return checkpoint(self._mlp, h, use_reentrant=False)

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([Block() for _ in range(2)])

    def forward(self, x):
        for blk in self.blocks:
            x = x + checkpoint(blk, x, use_reentrant=False)
        return x
""",
]

INVALID = [
    """
import torch.nn as nn
from torch.utils.checkpoint import checkpoint
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing, checkpoint_wrapper

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.use_ckpt = True

    def _forward(self, x):
        return self.fc(x).relu()

    def forward(self, x):
        if self.use_ckpt:
            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([Block() for _ in range(2)])

    def forward(self, x):
        for blk in self.blocks:
            x = x + checkpoint(blk, x, use_reentrant=False)  # expect: CKP504
        return x

def wrap(model):
    model.gradient_checkpointing_enable()
    apply_activation_checkpointing(model, check_fn=lambda m: isinstance(m, DecoderLayer))  # expect: CKP504
    return checkpoint_wrapper(Block())  # expect: CKP504
""",
]
