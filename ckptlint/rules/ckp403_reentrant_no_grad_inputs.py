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
parameter, a function input we cannot see).

Training scripts, the commonest shape: ``model.gradient_checkpointing_enable(
gradient_checkpointing_kwargs={"use_reentrant": True})`` (or
``TrainingArguments(gradient_checkpointing=True, gradient_checkpointing_kwargs=
{"use_reentrant": True})``, trl's configs alike) on a model frozen by
``get_peft_model`` / ``PeftModel.from_pretrained`` / ``requires_grad_(False)``
/ ``p.requires_grad = False`` loops / ``freeze*()`` helpers, with no
``enable_input_require_grads()`` / ``make_inputs_require_grad`` hook /
``add_adapter`` in the file. The library guards are followed: PEFT hooks
the embeddings itself when checkpointing was on before ``get_peft_model``;
``prepare_model_for_kbit_training`` does when it enables checkpointing;
transformers 5.x defaults to ``use_reentrant=False`` and calls
``enable_input_require_grads()`` itself for models whose main input is
``input_ids``, so on 5.x only vision / audio models (``ViTForImageClassification``,
``Wav2Vec2ForCTC``, ``*VisionModel``...) are flagged; on 4.x (reentrant by
default, no such guard) text models are too. The release is read from the
installed transformers' metadata.

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
from ckptlint.project import ModuleInfo, dotted_name
from ckptlint.rules._training_scripts import Script, transformers_major
from ckptlint.rules._common import reentrant_variant
from ckptlint.rules._idempotent import code_of
from ckptlint.rules._grad_sources import REENABLERS, GradSources, frozen_submodules
from ckptlint.rules.base import Hit, RuleContext

CODE = "CKP403"
NAME = "reentrant-no-grad-inputs"
MESSAGE = (
    "{func}(){of} runs reentrant ({how}) over inputs that cannot require grad ({why}): the reentrant variant "
    "backpropagates only through its tensor inputs, so the parameters of '{target}' get no gradient; "
    "pass use_reentrant=False, or make the input require grad ({fix})"
)
SCRIPT_MESSAGE = (
    "{call} enables reentrant checkpointing ({how}) on a model with frozen parameters ({frozen}){model}: each "
    "checkpointed layer then gets inputs that do not require grad, so the trainable parameters inside it "
    "(LoRA adapters, unfrozen layers) get no gradient; pass {kw}={{\"use_reentrant\": False}}, or call "
    "model.enable_input_require_grads() before training"
)
EVENT = "site"
EVENTS = ("site", "module")
# Cheap text gate: model files mention gradient_checkpointing everywhere, scripts switch it on.
_SCRIPT_WORDS = ("checkpointing_enable(", "gradient_checkpointing=True", "checkpointing_kwargs=")


def check(event: SiteCall | ModuleInfo, ctx: RuleContext) -> Iterator[Hit]:
    if isinstance(event, ModuleInfo):
        yield from _check_script(event)
        return
    site = event
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


def _check_script(mod: ModuleInfo) -> Iterator[Hit]:
    """Training scripts: transformers' reentrant gradient checkpointing on a frozen / PEFT model."""
    if not any(w in mod.source for w in _SCRIPT_WORDS):
        return
    scripts = Script.of(mod)
    if any(s.reenable_lines for s in scripts):
        return
    major = transformers_major()
    for script, enable in ((s, e) for s in scripts for e in s.enables):
        if enable.reentrant is not True:
            continue
        is_method = isinstance(enable.node.func, cst.Attribute) and enable.node.func.attr.value.endswith("checkpointing_enable")
        # PEFT hooks the embeddings itself when checkpointing is already on at get_peft_model time;
        # TrainingArguments switch it on later, inside the Trainer.
        peft = [line for line in script.peft_lines if line < enable.line or not is_method]
        frozen = [f"{what} at line {line}" for line, what in script.freezes] + [f"get_peft_model at line {line}" for line in peft]
        if not frozen:
            continue
        model = ""
        if major >= 5:
            non_text = script.non_text_model()
            if non_text is None:
                continue  # transformers 5 calls enable_input_require_grads() for input_ids models
            model = f", a {non_text} whose main input is not input_ids (transformers {major}.x only hooks input_ids embeddings)"
        how = "use_reentrant=True" if enable.explicit else f"the transformers {major}.x default"
        kw = "gradient_checkpointing_kwargs" if is_method or _has_kw(enable.node, "gradient_checkpointing") else "activation_checkpointing_kwargs"
        name = enable.node.func.attr.value if isinstance(enable.node.func, cst.Attribute) else (dotted_name(enable.node.func) or "call")
        yield Hit(enable.node, SCRIPT_MESSAGE.format(call=f"{name}()", how=how, frozen="; ".join(frozen[:2]), model=model, kw=kw))


def _has_kw(call: cst.Call, name: str) -> bool:
    return any(a.keyword is not None and a.keyword.value == name for a in call.args)


def _reentrant(site: SiteCall) -> str | None:
    return {"omitted": "use_reentrant omitted", "explicit": "use_reentrant=True"}.get(reentrant_variant(site) or "")


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
    code = code_of(expr)
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
