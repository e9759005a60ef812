"""CKP402 reentrant-with-kwargs: a reentrant checkpoint passed keywords it rejects (raises).

What: a call to torch's ``checkpoint`` that runs the *reentrant* variant —
``use_reentrant=True``, or ``use_reentrant`` omitted, which PyTorch still
treats as ``True`` — and passes keyword arguments the reentrant variant
refuses: keyword arguments meant for the checkpointed function
(``checkpoint(fn, x, mask=m)``), ``context_fn=`` (selective checkpointing)
or ``debug=True``. Also ``checkpoint_sequential(...)`` with any keyword but
``use_reentrant``/``preserve_rng_state``. Not judged when the call forwards
``**kwargs`` (they may carry ``use_reentrant=False``), nor for a team's own
wrapper whose default is unknown (timm's ``checkpoint`` defaults to
non-reentrant and accepts keywords).

Why it breaks checkpointing: this is an error, not a style issue. The
reentrant implementation only forwards positional arguments: PyTorch raises
``ValueError: Unexpected keyword arguments: mask`` (or "Passing `context_fn`
or `debug` is only supported when use_reentrant=False") on the first
training step that reaches the call. Code like timm 0.9's
``checkpoint(blk, x, shared_rel_pos_bias=rel_pos_bias)`` in ``beit.py`` /
``checkpoint(blk, x, rope=rot_pos_embed)`` in ``eva.py`` crashes as soon as
gradient checkpointing is switched on.

How to fix: pass ``use_reentrant=False`` (which forwards keyword arguments
and supports ``context_fn``), or pass the values positionally / bind them
with ``functools.partial(fn, mask=m)``.

Example::

    checkpoint(self.layer, x, attention_mask=mask)                        # CKP402 (omitted: reentrant)
    checkpoint(self.layer, x, use_reentrant=True, attention_mask=mask)    # CKP402
    checkpoint(self.layer, x, use_reentrant=False, attention_mask=mask)   # fine
"""

from __future__ import annotations

from typing import Iterator

import libcst as cst

from ckptlint.analysis import names as N
from ckptlint.discovery.sites import SiteCall
from ckptlint.rules._common import reentrant_variant
from ckptlint.rules.base import Hit, RuleContext, literal

CODE = "CKP402"
NAME = "reentrant-with-kwargs"
MESSAGE = "{func}(){of} {how} passes {what}: the reentrant variant raises ValueError ({error}) when the call runs; pass use_reentrant=False{alt}"
EVENT = "site"

# Keywords torch's reentrant checkpoint accepts without raising (``debug`` only when False).
_REENTRANT_OK = frozenset({"use_reentrant", "preserve_rng_state", "determinism_check", "early_stop", "function"})
_SEQUENTIAL_OK = frozenset({"use_reentrant", "preserve_rng_state", "functions", "segments", "input"})


def check(site: SiteCall, ctx: RuleContext) -> Iterator[Hit]:
    if site.kind not in ("checkpoint", "gc_func", "sequential"):
        return
    variant = reentrant_variant(site)
    if variant is None:
        return
    how = "without use_reentrant (runs reentrant)" if variant == "omitted" else "with use_reentrant=True"
    keywords = [a for a in site.call.args if a.keyword is not None]
    if site.kind == "sequential":
        bad = [a.keyword.value for a in keywords if a.keyword.value not in _SEQUENTIAL_OK]  # type: ignore[union-attr]
        if bad:
            yield _hit(site, ctx, how, f"keyword argument(s) {_names(bad)}", f"Unexpected keyword arguments: {','.join(bad)}", "")
        return
    fn_kwargs = [a.keyword.value for a in keywords if a.keyword.value not in N.CHECKPOINT_OWN_KWARGS]  # type: ignore[union-attr]
    if fn_kwargs:
        yield _hit(site, ctx, how, f"keyword argument(s) {_names(fn_kwargs)} to the function",
                   f"Unexpected keyword arguments: {','.join(fn_kwargs)}", " or pass them positionally")
        return
    rejected = [a.keyword.value for a in keywords if _rejected_option(a)]  # type: ignore[union-attr]
    if rejected:
        yield _hit(site, ctx, how, _names(rejected), "context_fn or debug need use_reentrant=False", "")


def _rejected_option(arg: cst.Arg) -> bool:
    """``context_fn=`` (other than torch's no-op default) or ``debug=`` not literally False."""
    name = arg.keyword.value if arg.keyword is not None else ""
    if name == "context_fn":
        return not (isinstance(arg.value, (cst.Name, cst.Attribute)) and _last(arg.value) == "noop_context_fn")
    if name == "debug":
        return literal(arg.value) is not False
    return False


def _last(expr: cst.BaseExpression) -> str:
    return expr.value if isinstance(expr, cst.Name) else expr.attr.value if isinstance(expr, cst.Attribute) else ""


def _names(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names)


def _hit(site: SiteCall, ctx: RuleContext, how: str, what: str, error: str, alt: str) -> Hit:
    return Hit(site.call, MESSAGE.format(func=site.name, how=how, of=ctx.of_callable, what=what, error=error, alt=alt))


VALID = [
    """
from torch.utils.checkpoint import checkpoint

def block(x, mask=None):
    return x * 2

def run(x, m, **kw):
    a = checkpoint(block, x, m, use_reentrant=True)
    b = checkpoint(block, x, use_reentrant=False, mask=m)
    c = checkpoint(block, x, mask=m, **kw)
    return checkpoint(block, a, use_reentrant=True, preserve_rng_state=False, debug=False)
""",
]

INVALID = [
    """
from torch.utils.checkpoint import checkpoint, checkpoint_sequential

def block(x, mask=None):
    return x * 2

def run(x, m, seq, policy):
    a = checkpoint(block, x, use_reentrant=True, mask=m)  # expect: CKP402
    b = checkpoint(block, x, mask=m)  # expect: CKP402, CKP401
    c = checkpoint(block, x, use_reentrant=True, context_fn=policy)  # expect: CKP402
    return checkpoint_sequential(seq, 2, a, use_reentrant=True, mask=m)  # expect: CKP402
""",
]
