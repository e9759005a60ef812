"""Shared name resolution for the CKP5xx efficiency rules (site rules: no flow analysis needed)."""

from __future__ import annotations

from typing import Sequence

import libcst as cst

from ckptlint.discovery.sites import SiteCall
from ckptlint.project import dotted_name

__all__ = ["CHEAP_FUNCTIONS", "CHEAP_MODULES", "GRAD_OFF", "LOSS_FUNCTIONS", "body_nodes", "qualnames", "walk_own"]

_F = "torch.nn.functional"
_NN = "torch.nn"
# Elementwise activations and norms: recomputing them is cheap, but checkpointing one alone
# keeps its input, which is as large as what it would have saved.
CHEAP_FUNCTIONS = frozenset(
    {f"{_F}.{n}" for n in ("relu", "gelu", "silu", "mish", "sigmoid", "tanh", "softmax", "log_softmax", "dropout",
                           "layer_norm", "group_norm", "rms_norm", "leaky_relu", "elu", "hardswish", "softplus")}
    | {f"torch.{n}" for n in ("relu", "sigmoid", "tanh", "softmax", "layer_norm", "group_norm")}
)
CHEAP_MODULES = frozenset(
    {f"{_NN}.{n}" for n in ("ReLU", "GELU", "SiLU", "Mish", "Sigmoid", "Tanh", "Softmax", "Dropout", "LayerNorm",
                            "GroupNorm", "RMSNorm", "LeakyReLU", "ELU", "Hardswish", "Identity", "Softplus")}
)
# Functional losses: a value passed straight into one is the end of the forward graph.
LOSS_FUNCTIONS = frozenset(
    {f"{_F}.{n}" for n in ("cross_entropy", "nll_loss", "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss",
                           "binary_cross_entropy", "binary_cross_entropy_with_logits", "kl_div", "ctc_loss")}
)
GRAD_OFF = frozenset({"torch.no_grad", "torch.inference_mode", "torch.autograd.grad_mode.no_grad",
                      "torch.autograd.grad_mode.inference_mode"})


def qualnames(site: SiteCall, expr: cst.BaseExpression) -> list[str]:
    """What ``expr`` (a dotted name) names, through the imports of the site's module and function."""
    dotted = dotted_name(expr)
    if dotted is None:
        return []
    head, _, rest = dotted.partition(".")
    tables = [site.ctx.local_imports, site.module.imports]
    out = []
    for table in tables:
        for target in table.get(head, []):
            out.append(f"{target}.{rest}" if rest else target)
        if out:
            break
    return out


def body_nodes(fn: cst.FunctionDef | cst.Lambda) -> list[cst.CSTNode]:
    """Every node of ``fn``'s own body, nested functions, lambdas and classes left out (they run elsewhere)."""
    return walk_own(list(fn.body.children) if isinstance(fn, cst.FunctionDef) else [fn.body])


def walk_own(nodes: Sequence[cst.CSTNode]) -> list[cst.CSTNode]:
    """``nodes`` and everything under them, except inside functions, lambdas and classes."""
    out: list[cst.CSTNode] = []
    todo = list(nodes)
    while todo:
        node = todo.pop()
        out.append(node)
        if not isinstance(node, (cst.FunctionDef, cst.Lambda, cst.ClassDef)):
            todo.extend(node.children)
    return out
