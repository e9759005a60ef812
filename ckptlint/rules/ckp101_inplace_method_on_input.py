"""CKP101 inplace-method-on-input: an in-place tensor method mutates a checkpoint input.

What: ``x.add_(...)``, ``x.masked_fill_(...)``, ``x.copy_(...)``, ``x.zero_()``
and every other trailing-underscore tensor method, or an in-place
``torch.*_`` function (``torch.relu_(x)``, ``nn.init.zeros_(x)``), applied to
an input of a checkpointed callable or to an alias/view of one (``h = x``,
``x.view(...)``, ``x[...]``, ``x.data``, ``x.detach()``, ``x.transpose(...)``).

Why it breaks checkpointing: checkpoint saves the *inputs* and reruns the
function on them during backward. After the first forward mutated the input,
the recompute starts from the mutated tensor: with ``use_reentrant=True`` and
an input that does not require grad the gradients are silently wrong; in the
other cases autograd raises a version-counter error in backward.

How to fix: use the out-of-place op and rebind the name,
``x = x.add(1)``; or ``x = x.clone()`` first.

Autofix (unsafe): ``x.add_(y)`` -> ``x = x.add(y)``, ``torch.relu_(x)`` ->
``x = torch.relu(x)``, ``F.elu_(x)`` -> ``x = F.elu(x)``, only for pairs in
``ckptlint/data/inplace_pairs.json`` -- PyTorch's in-place/out-of-place pairs,
each verified on real torch to compute the same value without mutating. Names
outside it get no fix (``clip_grad_norm_`` returns the norm,
``clip_grad_value_``, ``nn.init.trunc_normal_``, ``Tensor.apply_``, ``map_``
have no out-of-place twin). Nor is the fix offered where rebinding would change
what the function itself computes: when the mutated tensor is used after the
mutation through another name (``h = x; h.add_(1); return x * 3`` returns 6,
rebinding ``h`` would make it 3), in a later statement, a later iteration of
the loop or a nested function; nor inside a helper, whose caller still holds
the tensor. There, clone first: ``x = x.clone()`` at the top.

Example::

    def forward(self, hidden, attention_mask):
        attention_mask.masked_fill_(attention_mask == 0, -1e4)   # CKP101
        attention_mask = attention_mask.masked_fill(attention_mask == 0, -1e4)  # fine
"""

from __future__ import annotations

from typing import Iterator

import libcst as cst

from ckptlint.analysis import names as N
from ckptlint.analysis.flow import CallEvent
from ckptlint.data import INPLACE_NAMESPACES, out_of_place
from ckptlint.rules._rebind import rebinding_keeps_meaning
from ckptlint.rules._common import first_positional, inplace_method, inplace_torch_function, is_input, written
from ckptlint.rules.base import Hit, RuleContext, describe, edits_fix

CODE = "CKP101"
NAME = "inplace-method-on-input"
MESSAGE = (
    "in-place {op}() on {subject} {where}: the recompute in backward reads the mutated tensor; use {fix}"
)
EVENT = "call"


def check(event: CallEvent, ctx: RuleContext) -> Iterator[Hit]:
    op = None
    target: cst.BaseExpression | None = None
    root = None
    method_form = False
    if event.method is not None and inplace_method(event.method) and is_input(event.receiver) and not event.qualnames:
        op = event.method
        assert isinstance(event.call.func, cst.Attribute)
        target = event.call.func.value
        root = event.receiver
        method_form = True
    else:
        fn = inplace_torch_function(event.qualnames)
        first = first_positional(event)
        if fn is not None and first is not None and is_input(first[1]):
            op = fn
            target, root = first
    if op is None or target is None or root is None:
        return
    name = written(target)
    twin = _twin(event, op, method_form)
    if twin is not None:
        fix_text = f"{name} = {name}.{twin}(...)" if method_form else f"{name} = {written(event.call.func)[: -len(op)]}{twin}(...)"
    else:
        fix_text = f"{name} = {name}.clone() before mutating it"
    message = MESSAGE.format(op=op, subject=describe(root, name), where=ctx.where, fix=fix_text)
    fix = None
    call = event.call
    func = call.func
    attr = func.attr if isinstance(func, cst.Attribute) else func if isinstance(func, cst.Name) else None
    if (
        event.is_statement
        and twin is not None
        and op not in N.INPLACE_NO_TWIN
        and isinstance(target, cst.Name)
        and attr is not None
        and attr.value == op
        and (method_form or isinstance(func, cst.Attribute))
        and rebinding_keeps_meaning(call, root, ctx.visit)
    ):
        # ``x.add_(v)`` -> ``x = x.add(v)``; ``torch.relu_(x)`` -> ``x = torch.relu(x)``.
        fix = edits_fix(
            [("before", call, f"{target.value} = "), ("replace", attr, twin)],
            f"rebind '{target.value}' to the out-of-place {twin}() instead of mutating it "
            "(unsafe: a caller that relied on seeing the mutation no longer does)",
            "unsafe",
        )
    yield Hit(call, message, fix)


def _twin(event: CallEvent, op: str, method_form: bool) -> str | None:
    """The out-of-place twin from the table of verified torch pairs, else ``None``.

    Never string surgery: ``clip_grad_norm_`` minus its underscore returns the
    norm, ``Tensor.apply_``/``map_`` and ``nn.init.trunc_normal_`` have no twin.
    """
    if method_form:
        return out_of_place("Tensor", op)
    for q in event.qualnames:
        module, _, last = q.rpartition(".")
        if last == op and module in INPLACE_NAMESPACES:
            return out_of_place(INPLACE_NAMESPACES[module], op)
    return None


VALID = [
    """
import torch
from torch.utils.checkpoint import checkpoint

def update(state, h, **kwargs):
    state.copy_(h)
    return state

def block(x, **kwargs):
    state = torch.zeros_like(x)
    return update(state, x, **kwargs)

def run(x, m):
    return checkpoint(block, x, mask=m, use_reentrant=False)
""",
    """
import torch
from torch.utils.checkpoint import checkpoint

def block(x):
    x = x + 1
    x.add_(1)
    y = x.clone()
    y.mul_(2)
    return y

def run(x):
    return checkpoint(block, x, use_reentrant=False)
""",
    """
import torch
from torch.utils.checkpoint import checkpoint

def block(x):
    h = torch.relu(x)
    h.relu_()
    return h

def never_checkpointed(x):
    x.add_(1)
    return x

def run(x):
    return checkpoint(block, x, use_reentrant=False)
""",
]

INVALID = [
    """
import torch
from torch.utils.checkpoint import checkpoint

def block(x, mask):
    mask.masked_fill_(mask == 0, -1e4)  # expect: CKP101
    return x * mask

def run(x, m):
    return checkpoint(block, x, m, use_reentrant=False)
""",
    """
import torch
import torch.utils.checkpoint as cp

def block(x):
    h = x.view(-1)
    h.zero_()  # expect: CKP101
    torch.relu_(x)  # expect: CKP101
    x.data.add_(1)  # expect: CKP101
    return x

def run(x):
    return cp.checkpoint(block, x, use_reentrant=False)
""",
]
