"""What a training script does to checkpointing (for CKP403's script shape and CKP405).

Scripts rarely call ``checkpoint`` themselves: they switch it on through
transformers (``model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=...)``,
``TrainingArguments(gradient_checkpointing=True, gradient_checkpointing_kwargs=...)``
and its trl/accelerate relatives), freeze parameters (PEFT, ``requires_grad_(False)``
loops) and wrap the model in DDP (torch's wrapper, Lightning's
``strategy="ddp"`` / ``DDPStrategy``). :class:`Script` collects those calls of
one file, in source order, by the names and keywords the libraries document.

The installed transformers release decides the default: before 5.0
``gradient_checkpointing_enable()`` defaulted to ``use_reentrant=True``
(4.46.3: ``{"use_reentrant": True}``, Trainer passes ``{}`` which leaves
torch's reentrant default); from 5.0 it defaults to ``False`` and calls
``enable_input_require_grads()`` itself when the model's
``main_input_name`` is ``input_ids`` (5.24.0 ``_activation_checkpointing_enable``).
The release is read from the environment's package metadata (no import);
without transformers installed the newest behaviour is assumed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

import libcst as cst

from ckptlint.analysis.params import installed_major
from ckptlint.analysis.walk import walk
from ckptlint.project import ModuleInfo, dotted_name

__all__ = ["Script", "keyword_value", "transformers_major"]

_ENABLE = frozenset({"gradient_checkpointing_enable", "activation_checkpointing_enable"})
_GC_KWARGS = frozenset({"gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"})
_PEFT = frozenset({"get_peft_model", "inject_adapter_in_model"})
_REENABLE = frozenset({"enable_input_require_grads", "add_adapter", "load_adapter"})
# Vision / audio heads and towers: their main input is not ``input_ids``.
_NON_TEXT = re.compile(
    r"(ForImageClassification|ForSemanticSegmentation|ForObjectDetection|ForInstanceSegmentation|"
    r"ForUniversalSegmentation|ForDepthEstimation|ForVideoClassification|ForMaskedImageModeling|"
    r"ForImageSegmentation|ForKeypointDetection|ForAudioClassification|ForAudioFrameClassification|"
    r"ForCTC|ForXVector|ForSpeechSeq2Seq|ForPreTraining|VisionModel|AudioModel|SpeechModel|"
    r"^(?:ViT|Dinov2|Swin|Swinv2|ConvNext|ConvNextV2|Beit|Deit|Segformer|Wav2Vec2|Hubert|WavLM|Whisper|"
    r"Data2VecVision|Data2VecAudio|Mask2Former|Detr|SiglipVision|CLIPVision|ResNet|Dinov3)\w*Model$)"
)
_NOT_A_MODEL = re.compile(r"Tokenizer|Processor|Config|FeatureExtractor|PeftModel|Pipeline|Dataset|Scheduler")


@lru_cache(maxsize=1)
def transformers_major() -> int:
    """Major version of the installed transformers (metadata only); 5 when absent or unreadable."""
    return installed_major("transformers", 5)


@dataclass(frozen=True)
class Enable:
    """A call that switches checkpointing on, with the variant it selects."""

    node: cst.Call
    line: int
    reentrant: bool | None  # True / False / None: unknown (a variable)
    explicit: bool  # the use_reentrant value is written at the call


@dataclass
class Script:
    mod: ModuleInfo
    enables: list[Enable] = field(default_factory=list)
    freezes: list[tuple[int, str]] = field(default_factory=list)  # (line, what)
    peft_lines: list[int] = field(default_factory=list)
    reenable_lines: list[int] = field(default_factory=list)
    model_classes: list[str] = field(default_factory=list)  # the module scope's, for functions
    own_models: list[str] = field(default_factory=list)
    ddp_calls: list[cst.Call] = field(default_factory=list)
    static_graph_lines: list[int] = field(default_factory=list)
    reentrant_checkpoints: list[int] = field(default_factory=list)  # torch checkpoint calls running reentrant
    ddp_unused_args: list[cst.Call] = field(default_factory=list)  # TrainingArguments(ddp_find_unused_parameters=True)

    @classmethod
    def of(cls, mod: ModuleInfo) -> list[Script]:
        """One record per scope (the module's own statements, each function body): a script's
        helper functions often load and prepare different models."""
        scopes: list[Script] = []
        stack: list[tuple[cst.CSTNode, Script | None]] = [(mod.module, None)]
        while stack:
            root, parent = stack.pop()
            out = cls(mod)
            if parent is not None:
                out.model_classes = parent.own_models  # a module-level model used inside a function
            scopes.append(out)
            for node in walk(root, into_defs=False):
                if node is not root and isinstance(node, (cst.FunctionDef, cst.ClassDef, cst.Lambda)):
                    if isinstance(node, (cst.FunctionDef, cst.ClassDef)):
                        stack.append((node, out if parent is None else parent))
                    continue
                if isinstance(node, cst.Call):
                    out._call(node)
                elif isinstance(node, cst.Assign) and _false(node.value):
                    for t in node.targets:
                        if isinstance(t.target, cst.Attribute) and t.target.attr.value == "requires_grad":
                            out.freezes.append((out._line(node), "requires_grad = False"))
        return scopes

    def _line(self, node: cst.CSTNode) -> int:
        pos = self.mod.position(node)
        return pos.start.line if pos is not None else 0

    def _call(self, call: cst.Call) -> None:
        last = _last(call.func)
        # model.gradient_checkpointing_enable(...) / TrainingArguments(gradient_checkpointing=True, ...)
        if last in _ENABLE or _true(keyword_value(call, "gradient_checkpointing")):
            value = _gc_kwargs_reentrant(call)
            if value is _UNSET:  # no use_reentrant written: the release's default
                self.enables.append(Enable(call, self._line(call), transformers_major() < 5, False))
            else:
                self.enables.append(Enable(call, self._line(call), value, True))  # type: ignore[arg-type]
        if last in _PEFT or (last == "from_pretrained" and _last(_owner(call.func)) == "PeftModel"):
            self.peft_lines.append(self._line(call))
        elif last == "prepare_model_for_kbit_training":
            gc = keyword_value(call, "use_gradient_checkpointing")
            if gc is not None and _false(gc):
                self.freezes.append((self._line(call), "prepare_model_for_kbit_training"))
            else:
                self.reenable_lines.append(self._line(call))  # it hooks the embeddings itself when reentrant
        elif last == "requires_grad_" and call.args and _false(call.args[0].value):
            self.freezes.append((self._line(call), f"{dotted_name(call.func) or 'requires_grad_'}(False)"))
        elif last is not None and (last in _REENABLE or "make_inputs_require_grad" in last):
            self.reenable_lines.append(self._line(call))
        elif last is not None and last.startswith("freeze") and call.args:
            self.freezes.append((self._line(call), f"{last}()"))
        elif last == "register_forward_hook" and any("require_grad" in (dotted_name(a.value) or "") for a in call.args):
            self.reenable_lines.append(self._line(call))
        elif last == "from_pretrained":
            owner = _last(_owner(call.func))
            if owner and not _NOT_A_MODEL.search(owner):
                self.own_models.append(owner)
        elif last in ("DistributedDataParallel", "DDP", "DDPStrategy") or _ddp_strategy(keyword_value(call, "strategy")):
            self.ddp_calls.append(call)  # torch's wrapper, or Lightning's DDP strategy (its own kwargs reach DDP)
            if _true(keyword_value(call, "static_graph")):
                self.static_graph_lines.append(self._line(call))
        elif last == "_set_static_graph":
            self.static_graph_lines.append(self._line(call))
        elif last in ("checkpoint", "checkpoint_sequential") and not any(a.star == "**" for a in call.args):
            flag = keyword_value(call, "use_reentrant")
            if (flag is None and call.args) or _true(flag):
                self.reentrant_checkpoints.append(self._line(call))
        if _true(keyword_value(call, "ddp_find_unused_parameters")):
            self.ddp_unused_args.append(call)

    def non_text_model(self) -> str | None:
        """The model class this scope loads when its main input is not ``input_ids`` (None: text or unknown)."""
        own = self.own_models or self.model_classes
        if own and _NON_TEXT.search(own[-1]):
            return own[-1]
        return None


class _Unset:
    pass


_UNSET = _Unset()


def _gc_kwargs_reentrant(call: cst.Call) -> bool | None | _Unset:
    for name in _GC_KWARGS:
        value = keyword_value(call, name)
        if value is None:
            continue
        found = _dict_value(value, "use_reentrant")
        if found is _UNSET:
            return _UNSET if isinstance(value, (cst.Dict, cst.Call)) else None
        if isinstance(found, cst.Name) and found.value in ("True", "False"):
            return found.value == "True"
        return None
    return _UNSET


def _dict_value(expr: cst.BaseExpression, key: str) -> cst.BaseExpression | _Unset:
    if isinstance(expr, cst.Dict):
        for el in expr.elements:
            if isinstance(el, cst.DictElement) and isinstance(el.key, cst.SimpleString) and el.key.evaluated_value == key:
                return el.value
    elif isinstance(expr, cst.Call) and dotted_name(expr.func) == "dict":
        found = keyword_value(expr, key)
        if found is not None:
            return found
    return _UNSET


def keyword_value(call: cst.Call, name: str) -> cst.BaseExpression | None:
    """The value passed as ``name=`` (None when absent)."""
    for a in call.args:
        if a.keyword is not None and a.keyword.value == name:
            return a.value
    return None


def _last(expr: cst.BaseExpression) -> str | None:
    if isinstance(expr, cst.Name):
        return expr.value
    if isinstance(expr, cst.Attribute):
        return expr.attr.value
    return None


def _owner(expr: cst.BaseExpression) -> cst.BaseExpression:
    return expr.value if isinstance(expr, cst.Attribute) else expr


def _ddp_strategy(expr: cst.BaseExpression | None) -> bool:
    """Lightning's ``Trainer(strategy="ddp")`` and its spellings (``ddp_spawn``, ``ddp_find_unused_parameters_true``)."""
    return isinstance(expr, cst.SimpleString) and str(expr.evaluated_value).startswith("ddp")


def _true(expr: cst.BaseExpression | None) -> bool:
    return isinstance(expr, cst.Name) and expr.value == "True"


def _false(expr: cst.BaseExpression | None) -> bool:
    return isinstance(expr, cst.Name) and expr.value == "False"
