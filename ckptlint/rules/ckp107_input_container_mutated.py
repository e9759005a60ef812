"""CKP107 input-container-mutated: a mutating method on a caller-provided container.

What: ``state.append(h)``, ``cache.update(...)``, ``.extend``, ``.insert``,
``.pop``, ``.popitem``, ``.setdefault``, ``.clear``, ``.remove`` called on an
input of a checkpointed callable (a list, dict or cache object the caller
passed in) or on something reached from it.

Why it breaks checkpointing: the container outlives the call. The recompute
in backward runs the method a second time on the already-changed container
(a KV cache concatenated twice: shape errors in non-reentrant mode, wrong
gradients in reentrant mode).

How to fix: return the new entries and let the caller store them, or run
the cache update outside the checkpointed region. transformers'
``GradientCheckpointingLayer`` passes ``cache=None`` under checkpoint, so
``past_key_values.update(...)`` in such layers is not flagged.

Example::

    def forward(self, x, cache):
        cache.append(x)     # CKP107
        return x
"""

from __future__ import annotations

from typing import Iterator

from ckptlint.analysis import names as N
from ckptlint.analysis.flow import CallEvent
from ckptlint.rules._common import written
from ckptlint.rules._idempotent import idempotent_update
from ckptlint.rules.base import Hit, RuleContext, describe

CODE = "CKP107"
NAME = "input-container-mutated"
MESSAGE = "{method}() mutates {subject} {where}: the recompute in backward runs it again on the changed container; return new state instead"
EVENT = "call"


def check(event: CallEvent, ctx: RuleContext) -> Iterator[Hit]:
    if event.method not in N.CONTAINER_MUTATORS or event.receiver is None or event.receiver.kind != "input":
        return
    if event.receiver.fresh_container:  # the function's own **kwargs dict
        return
    if event.qualnames:
        return
    if event.method == "update" and idempotent_update(event.call, ctx.function):
        return
    import libcst as cst

    assert isinstance(event.call.func, cst.Attribute)
    name = event.receiver.name or written(event.call.func.value)
    yield Hit(event.call, MESSAGE.format(method=event.method, subject=describe(event.receiver, name), where=ctx.where))


VALID = [
    """
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

class DownBlock(nn.Module):
    # diffusers 0.21 vae.py: the forwarding closure passes only ``sample``; the dict is the block's own.
    def __init__(self):
        super().__init__()
        self.conv = nn.Linear(4, 4)

    def forward(self, hidden_states, temb=None, cross_attention_kwargs=None):
        cross_attention_kwargs = cross_attention_kwargs if cross_attention_kwargs is not None else {}
        cross_attention_kwargs.update({"scale": 0.5})
        return self.conv(hidden_states)

class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.down_blocks = nn.ModuleList([DownBlock()])

    def forward(self, sample):
        def create_custom_forward(module):
            def custom_forward(*inputs):
                return module(*inputs)
            return custom_forward

        for down_block in self.down_blocks:
            sample = checkpoint(create_custom_forward(down_block), sample, use_reentrant=False)
        return sample
""",
    """
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

class AttnDownBlock(nn.Module):
    # diffusers 0.21: the LoRA scale read from the kwargs is written back under the same key.
    def __init__(self):
        super().__init__()
        self.attn = nn.Linear(4, 4)

    def forward(self, hidden_states, cross_attention_kwargs):
        lora_scale = cross_attention_kwargs.get("scale", 1.0)
        cross_attention_kwargs.update({"scale": lora_scale})
        return self.attn(hidden_states)

class UNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.down = AttnDownBlock()

    def forward(self, x, kwargs):
        return checkpoint(self.down, x, kwargs, use_reentrant=False)
""",
    """
from torch.utils.checkpoint import checkpoint

def get_max_seqlen(kwargs, name):
    return kwargs.pop(name, None)

def block(x, **kwargs):
    kwargs.setdefault("scale", 1)
    get_max_seqlen(kwargs, "max_seqlen")
    return x

def run(x, m):
    return checkpoint(block, x, max_seqlen=m, use_reentrant=False)
""",
    """
from torch.utils.checkpoint import checkpoint

def block(x):
    outs = []
    outs.append(x)
    return outs[0]

def run(x):
    return checkpoint(block, x, use_reentrant=False)
""",
]

INVALID = [
    """
from torch.utils.checkpoint import checkpoint

def block(x, state, cache):
    state.append(x)  # expect: CKP107
    cache.update({"k": x})  # expect: CKP107
    return x

def run(x, s, c):
    return checkpoint(block, x, s, c, use_reentrant=False)
""",
]
