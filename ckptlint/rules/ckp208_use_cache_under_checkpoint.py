"""CKP208 use-cache-under-checkpoint: a KV cache is written inside a checkpointed forward.

What: inside a checkpointed callable,

- a call passing ``use_cache=True`` literally (``self.attn(h, use_cache=True)``,
  ``layer(h, past_key_values=cache, use_cache=True)``), or
- a cache write — ``.append``/``.extend``/``.update``/``.insert``/``copy_`` on, or
  an assignment / ``+=`` into, ``self`` state or a container the caller passed
  (``self.k_cache = torch.cat([self.k_cache, k])``, ``past_key_values.update(k, v, i)``,
  ``presents.append((k, v))``) — in an ``if use_cache:`` branch of the
  checkpointed forward itself, when ``use_cache`` is ``True`` there: the
  checkpoint call passes ``use_cache=True``, or does not pass it and the
  parameter defaults to ``True``.

Not flagged when the wrapper turns the cache off: transformers'
``GradientCheckpointingLayer`` sets ``use_cache=False`` (4.5x and 5.x; the
keywords each release nulls are read by ``ckptlint.analysis.params``), a
``partial`` binding ``use_cache=False``, a site passing ``use_cache=False``
or a variable (whose value is not known here), or ``**kwargs``.

Why it breaks checkpointing: checkpoint reruns the forward in backward, so
the cache is written a second time (a duplicated key/value entry, a wrong
sequence length for the next step, a counter advanced twice), and the cached
tensors keep the activations alive that checkpointing was meant to free.
transformers switches ``use_cache`` off when training with gradient
checkpointing for this reason ("use_cache=True is incompatible with
gradient checkpointing").

How to fix: pass ``use_cache=False`` to checkpointed layers while training
(or default the parameter to ``False``); keep cache updates outside the
checkpointed region.

Example::

    def forward(self, x, cache=None, use_cache=True):
        k = self.k(x)
        if use_cache:
            cache.append(k)                      # CKP208 under checkpoint(layer, x, cache, use_reentrant=False)
        ...
    checkpoint(layer, x, cache, use_cache=False, use_reentrant=False)   # fine

A literal ``use_cache=True`` passed on *inside* the checkpointed body is
flagged whatever the wrapper: ``GradientCheckpointingLayer`` only nulls the
layer's own keywords.
"""

from __future__ import annotations

from typing import Iterator

import libcst as cst

from ckptlint.analysis.flow import CallEvent, WriteEvent
from ckptlint.analysis.params import gc_layer_nulled
from ckptlint.analysis.walk import walk
from ckptlint.discovery.sites import CheckedCallable
from ckptlint.project import Project
from ckptlint.rules._common import written
from ckptlint.rules.base import Hit, RuleContext, kwarg, literal

CODE = "CKP208"
NAME = "use-cache-under-checkpoint"
MESSAGE = (
    "{what}{how} {where}: checkpoint reruns the forward in backward, so the cache is written a second time "
    "(duplicated key/value entries, a wrong length for the next step) and keeps activations alive that "
    "checkpointing should free; pass use_cache=False to checkpointed layers while training"
)
EVENT = "call"
EVENTS = ("call", "write")
_WRITE_METHODS = frozenset({"append", "extend", "update", "insert", "copy_", "setdefault"})
_NOT_CALLS = frozenset({"checkpoint_wrapper", "apply_activation_checkpointing", "checkpoint_sequential", "checkpoint_seq"})
_OUTSIDE = frozenset({"self", "input", "outer", "global", "closure"})


def check(event: CallEvent | WriteEvent, ctx: RuleContext) -> Iterator[Hit]:
    checked, visit = ctx.checked, ctx.visit
    if checked is None or visit is None or visit.ref is None or "use_cache" not in visit.module.source:
        return
    if isinstance(event, CallEvent):
        arg = kwarg(event.call, "use_cache")
        if arg is not None and literal(arg.value) is True:  # no wrapper nulls what the body passes on
            yield Hit(arg, MESSAGE.format(what=f"{written(event.call.func)}(..., use_cache=True)", where=ctx.inside, how=""))
            return
    if len(visit.chain) != 1 or visit.ref.node is not getattr(checked.ref, "node", None):
        return  # helpers see use_cache through the call that reaches them (flagged there when literal)
    what = _cache_write(event)
    if what is None or not _in_use_cache_branch(visit.ref.node, event.stmt, ctx):
        return
    how = _use_cache_on(checked, ctx.project)
    if how is not None:
        yield Hit(event.stmt, MESSAGE.format(what=f"{what} in an `if use_cache:` branch", where=ctx.inside, how=f" with use_cache True ({how})"))


def _off(checked: CheckedCallable, project: Project | None) -> bool:
    """The wrapper fixes ``use_cache`` to False for the whole region."""
    ref = checked.ref
    if ref is not None and "use_cache" in ref.nulled:
        return True
    if checked.via != "GradientCheckpointingLayer":
        return False
    if project is None or ref is None:
        return True  # both releases' wrappers set use_cache=False
    return "use_cache" in gc_layer_nulled(project, ref.cls)


def _cache_write(event: CallEvent | WriteEvent) -> str | None:
    if isinstance(event, CallEvent):
        root = event.receiver
        if event.method in _WRITE_METHODS and not event.qualnames and root is not None and root.kind in _OUTSIDE:
            assert isinstance(event.call.func, cst.Attribute)
            return f"{written(event.call.func.value)}.{event.method}(...)"
        return None
    if event.kind in ("assign", "aug") and event.root.kind in _OUTSIDE and isinstance(event.target, (cst.Attribute, cst.Subscript)):
        return f"write to {written(event.target)}"
    return None


def _in_use_cache_branch(fn: cst.CSTNode, stmt: cst.CSTNode, ctx: RuleContext) -> bool:
    key = ("ckp208_branches", id(fn))
    store = ctx.project.cache if ctx.project is not None else {}
    inside = store.get(key)
    if inside is None:
        inside = set()
        for node in walk(fn, into_defs=False):
            if isinstance(node, cst.If) and _tests_use_cache(node.test):
                inside.update(id(n) for n in walk(node.body, into_defs=False))
        store[key] = inside
    return id(stmt) in inside


def _tests_use_cache(test: cst.BaseExpression) -> bool:
    if isinstance(test, cst.Name):
        return test.value == "use_cache"
    if isinstance(test, cst.BooleanOperation) and isinstance(test.operator, cst.And):
        return _tests_use_cache(test.left) or _tests_use_cache(test.right)
    return False


def _use_cache_on(checked: CheckedCallable, project: Project | None) -> str | None:
    """Why ``use_cache`` is True in the checkpointed forward, else None (off or unknown)."""
    ref = checked.ref
    if ref is None or _off(checked, project) or checked.via == "GradientCheckpointingLayer":
        return None
    node = ref.node
    if not isinstance(node, cst.FunctionDef):
        return None
    params = [*node.params.posonly_params, *node.params.params]
    if ref.bound and params:
        params = params[1:]
    params = params[ref.partial_positional :]
    names = [p.name.value for p in params]
    param = next((p for p in (*params, *node.params.kwonly_params) if p.name.value == "use_cache"), None)
    if param is None:
        return None
    site = checked.site_node
    if checked.via in _NOT_CALLS or not isinstance(site, cst.Call) or any(a.star for a in site.args):
        return None  # wrappers call the module later, with arguments we do not see
    first = next((a.value for a in site.args if a.keyword is None), None)
    if not isinstance(first, (cst.Name, cst.Attribute)):
        return None  # a lambda / closure / partial may pass use_cache itself
    given = kwarg(site, "use_cache")
    if given is not None:
        return "the checkpoint call passes it" if literal(given.value) is True else None
    positional = [a for a in site.args if a.keyword is None][1:]
    if "use_cache" in names and names.index("use_cache") < len(positional):
        value = positional[names.index("use_cache")].value
        return "the checkpoint call passes it" if literal(value) is True else None
    if param.default is not None and literal(param.default) is True:
        return "its default; the checkpoint call does not pass it"
    return None


VALID = [
    """
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

class Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.k = nn.Linear(8, 8)

    def forward(self, x, cache, use_cache=True):
        k = self.k(x)
        if use_cache:
            cache.append(k)
        return k

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = Layer()

    def forward(self, x, cache, flag):
        a = checkpoint(self.layer, x, cache, use_cache=False, use_reentrant=False)
        return checkpoint(self.layer, a, cache, flag, use_reentrant=False)
""",
]

VALID.append(
    """
import torch
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

class Layer(GradientCheckpointingLayer):
    def __init__(self):
        super().__init__()
        self.k = nn.Linear(8, 8)
        self.keys = []

    def forward(self, x, use_cache=True, **kwargs):
        k = self.k(x)
        if use_cache:
            self.keys.append(k)
        return k
"""
)

INVALID = [
    """
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

class Attn(nn.Module):
    def __init__(self):
        super().__init__()
        self.k = nn.Linear(8, 8)

    def forward(self, x, cache=None, use_cache=False):
        return self.k(x)

class Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = Attn()

    def forward(self, x, cache, use_cache=True):
        h = self.attn(x, cache, use_cache=True)  # expect: CKP208
        if use_cache:
            cache.append(h)  # expect: CKP208, CKP107
        return h

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = Layer()

    def forward(self, x, cache):
        return checkpoint(self.layer, x, cache, use_reentrant=False)
""",
]
