"""What to do: a report's mismatches grouped by cause, each with its fix and the matching lint rule.

``advise(report)`` turns rows into causes: 88 BatchNorm buffer rows become one
line ("running statistics of 22 BatchNorm layers in regions ... updated twice
per step"), parameters without a gradient under reentrant checkpoint become
the frozen-inputs diagnosis, and the census and hook counts add what no
gradient shows (checkpointing off, a region checkpointed twice, hooks run
again by the recompute). Imports no torch: it reads a ``Report`` only.
"""

from __future__ import annotations

import re
import textwrap
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from runtime_checks.report import Mismatch, Report

__all__ = ["Advice", "advise", "summarise"]

_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
_RULE_OF_DIVERGENCE = {"value": "CKP201", "path": "CKP201", "shape": "CKP203", "dtype": "CKP205"}
NO_GRAD_WARNING = "None of the inputs have requires_grad=True"


@dataclass(frozen=True)
class Advice:
    """One cause: what happened, how to fix it, and the lint rule that finds it in the source.

    ``cause`` is a stable key (``not-checkpointed``, ``batchnorm-twice``,
    ``buffer-written``, ``frozen-inputs``, ``frozen-inputs-harmless``,
    ``missing-grad``, ``rng``, ``inplace``, ``recompute-metadata``,
    ``recompute-diverged``, ``recomputed-differently``, ``state``, ``never-recomputed``,
    ``checkpointed-twice``, ``hooks-rerun``, ``error``);
    ``rule`` a ``ckptlint`` code (``ckptlint rule CKP204`` explains it) or ``None``.
    """

    cause: str
    summary: str
    fix: str
    rule: str | None = None

    def lines(self, width: int = 110) -> list[str]:
        out = textwrap.wrap(self.summary, width, initial_indent="- ", subsequent_indent="  ", break_on_hyphens=False)
        out += textwrap.wrap(self.fix, width, initial_indent="  fix: ", subsequent_indent="    ", break_on_hyphens=False)
        if self.rule:
            out.append(f"  lint rule: {self.rule} (`ckptlint rule {self.rule}` explains it)")
        return out


def summarise(names: Iterable[str], limit: int = 6) -> str:
    """``a, b, c and 55 more`` — a list short enough for one line; consecutive indices collapsed."""
    items = _collapse(list(dict.fromkeys(n for n in names if n)))
    if not items:
        return "?"
    if len(items) <= limit:
        return ", ".join(items)
    return ", ".join(items[:limit]) + f" and {len(items) - limit} more"


_NUMBERED = re.compile(r"(.*?)(\d+)")


def _collapse(items: list[str]) -> list[str]:
    """``layers.0, layers.1, layers.2`` -> ``layers.{0..2}``."""
    out: list[str] = []
    i = 0
    while i < len(items):
        m = _NUMBERED.fullmatch(items[i])
        j = i
        if m:
            prefix, first = m.group(1), int(m.group(2))
            while j + 1 < len(items):
                nxt = _NUMBERED.fullmatch(items[j + 1])
                if not nxt or nxt.group(1) != prefix or int(nxt.group(2)) != first + j + 1 - i:
                    break
                j += 1
        out.append(items[i] if j == i else f"{m.group(1)}{{{m.group(2)}..{first + j - i}}}")  # type: ignore[union-attr]
        i = j + 1
    return out


def _owner(name: str) -> tuple[str, str]:
    mod, _, leaf = name.rpartition(".")
    return mod, leaf


def _natural(name: str) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _regions(rows: Sequence[Mismatch]) -> str:
    names: set[str] = set()
    for m in rows:
        names.update(r.strip() for r in (m.region or "").split(",") if r.strip())
    return summarise(sorted(names, key=_natural)) if names else "(not localised)"


def _frozen(report: Report, missing: list[Mismatch]) -> Advice:
    params = summarise([m.name for m in missing], limit=4)
    return Advice(
        "frozen-inputs",
        f"{len(missing)} parameters get no gradient ({params}): reentrant checkpoint warned "
        f"{NO_GRAD_WARNING!r} — no input of regions {_regions(missing)} requires grad (frozen "
        "embeddings or a frozen base), so backward never reaches the trainable parameters inside",
        "checkpoint with use_reentrant=False (gradient_checkpointing_enable(gradient_checkpointing_kwargs="
        "{'use_reentrant': False})), or make the region inputs require grad (transformers: "
        "model.enable_input_require_grads())",
        "CKP401",
    )


# What torch's "different metadata" most likely means, by what the decoder saw differ first.
_METADATA_CAUSE = {
    "shape": ("the recompute saw tensors of another shape than the forward: a cache or list grown by the "
              "first run, or a shape changed by a wrapper", "CKP203"),
    "dtype": ("the recompute ran in another dtype than the forward: autocast (or a dtype flag the first run "
              "set) active around the forward but not around backward's recompute", "CKP205"),
    "path": ("the recompute took another path than the forward: a flag or counter the first run changed",
             "CKP201"),
}
_METADATA_GENERIC = ("the recompute produced tensors of another shape/dtype/count than the forward (a cache or "
                     "list grown by the first run, a dtype changed by autocast, a shape changed by a wrapper)")


def _errors(rows: list[Mismatch], decoded: dict[str, str] | None = None) -> list[Advice]:
    decoded = decoded or {}
    out = []
    for m in rows:
        text = m.detail
        if "different metadata" in text or "Recomputed values" in text:
            cause, rule = _METADATA_CAUSE.get(decoded.get(m.region or "", ""), (_METADATA_GENERIC, "CKP203"))
            out.append(Advice(
                "recompute-metadata",
                f"torch's determinism check failed in {m.region or 'a region'}: {cause}"
                + (f"; {text}" if text else ""),
                "make the region a function of its inputs only: pass caches in and return them instead of "
                "appending to state, and keep autocast the same around forward and backward",
                rule,
            ))
        elif "inplace operation" in text or "in-place" in text:
            out.append(Advice(
                "inplace",
                f"a tensor saved for the recompute was modified in place ({text})",
                "replace the in-place op on the region's input by its out-of-place form (x = x.add(1))",
                "CKP101",
            ))
        elif "keyword" in text.lower() and "reentrant" in text.lower():
            out.append(Advice(
                "error", f"reentrant checkpoint refused keyword arguments ({text})",
                "use use_reentrant=False, or pass the values positionally", "CKP402",
            ))
        else:
            out.append(Advice(
                "error", f"only the checkpointed run raised {m.name}: {text}",
                "the baseline ran: the failure comes from checkpointing; see the error text", None,
            ))
    return out


def advise(report: Report) -> tuple[Advice, ...]:
    """The causes behind ``report``'s findings, most serious first."""
    out: list[Advice] = []
    if not report.regions and not report.allow_no_checkpoint:
        out.append(Advice(
            "not-checkpointed",
            "no checkpoint region ran: checkpointing is off for this model and input, so there is "
            "nothing to verify (transformers checkpoints only in train mode after gradient_checkpointing_enable())",
            "enable checkpointing (model.train(); gradient_checkpointing_enable(), or verify(..., checkpoint=...)), "
            "or pass allow_no_checkpoint=True if none is intended",
        ))
    by_kind: dict[str, list[Mismatch]] = defaultdict(list)
    for m in report.mismatches:
        by_kind[m.kind].append(m)
    first_difference = {}
    for d in report.recompute:
        first_difference.setdefault(d.region, d.what)
    out.extend(_errors(by_kind.get("error", []), first_difference))
    warned = any(NO_GRAD_WARNING in n for n in report.notes)
    missing = by_kind.get("missing_grad", [])
    if missing:
        out.append(_frozen(report, missing) if warned else Advice(
            "missing-grad",
            f"{len(missing)} tensors get no gradient in the checkpointed run ({summarise([m.name for m in missing], 4)}) "
            f"in regions {_regions(missing)}",
            "use use_reentrant=False (reentrant checkpoint drops gradients of inputs that are not top-level "
            "tensors and of parameters when no input requires grad), or model.enable_input_require_grads()",
            "CKP401",
        ))
    elif warned:
        silent = [c.name for c in report.census if c.recomputes == 0]
        out.append(Advice(
            "frozen-inputs-harmless",
            f"reentrant checkpoint warned {NO_GRAD_WARNING!r}"
            + (f" for {summarise(silent)}" if silent else "")
            + ": harmless here — no trainable parameter inside those regions lost its gradient "
            "(every gradient matches the baseline)",
            "nothing to fix; use_reentrant=False silences the warning (and the region is then not recomputed "
            "needlessly)",
        ))
    buffers = by_kind.get("buffer", [])
    bn = [m for m in buffers if _owner(m.name)[1] in _BN_BUFFERS]
    if bn:
        layers = {_owner(m.name)[0] for m in bn}
        out.append(Advice(
            "batchnorm-twice",
            f"running statistics of {len(layers)} BatchNorm layers in regions {_regions(bn)} updated twice per "
            f"step ({len(bn)} buffers: the recompute in backward runs the layers again in train mode)",
            "keep BatchNorm outside the checkpointed region, use GroupNorm/LayerNorm, or freeze the statistics "
            "(BN layers in eval() or track_running_stats=False) while fine-tuning",
            "CKP204",
        ))
    other = [m for m in buffers if m not in bn]
    if other:
        out.append(Advice(
            "buffer-written",
            f"{len(other)} buffers end differently ({summarise([m.name for m in other], 4)}): written during the "
            f"forward of regions {_regions(other)}, so the recompute writes them again",
            "do not update buffers inside a checkpointed forward, or update them once outside it",
            "CKP201",
        ))
    rng = by_kind.get("rng", [])
    if rng:
        streams = [m.name for m in rng]
        rule = "CKP301" if "random" in streams else "CKP302" if "numpy" in streams else (
            "CKP303" if any(s.startswith("generator:") for s in streams) else "CKP305")
        out.append(Advice(
            "rng",
            f"random streams {', '.join(streams)} end in another state: the recompute draws fresh random "
            f"numbers in regions {_regions(rng)} (checkpoint restores only torch's default generators, and "
            "only with preserve_rng_state=True)",
            "draw randomness from torch's default generator with preserve_rng_state=True, or outside the region",
            rule,
        ))
    values = by_kind.get("grad", []) + by_kind.get("output", []) + by_kind.get("unexpected_grad", [])
    state = [n for n in report.notes if n.startswith("Python state differs")]
    if values:
        what = summarise([m.name for m in values], 4)
        if state:
            out.append(Advice(
                "state",
                f"{len(values)} values differ ({what}) in regions {_regions(values)}, and Python state the "
                f"forward writes ends differently ({state[0].split(': ', 1)[-1]}): the recompute reads "
                "the state the first run left behind",
                "keep the region free of writes to attributes and globals (count outside the checkpointed "
                "function, or pass the value in)",
                "CKP201",
            ))
        elif not rng and not buffers:
            out.append(Advice(
                "recomputed-differently",
                f"{len(values)} values differ ({what}) in regions {_regions(values)}: the recompute in backward "
                "computed something else than the forward (state read inside the region changed in between: "
                "a closure counter, a global, a config, an attribute, an RNG torch does not restore)",
                "make the region a pure function of its inputs and parameters",
                "CKP202",
            ))
    by_site: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    first = {}
    for d in report.recompute:
        site = (d.op, d.what, d.module.rpartition(".")[2])
        by_site[site].append(d.region)
        first.setdefault(site, d)
    for site, regions in by_site.items():
        d = first[site]
        more = f" (and the same in {len(regions) - 1} more regions: {summarise(regions[1:])})" if len(regions) > 1 else ""
        out.append(Advice(
            "recompute-diverged",
            f"the recompute of {d.describe()}{more}",
            "make the region a pure function of its inputs and parameters: state it reads must not change "
            "between the forward and backward",
            _RULE_OF_DIVERGENCE[d.what],
        ))
    out.extend(_census(report))
    out.extend(_hooks(report))
    return tuple(out)


def _census(report: Report) -> list[Advice]:
    out = []
    twice = [c for c in report.census if (c.recomputes or 0) >= 2 or c.nested]
    if twice:
        n = max(c.recomputes or 0 for c in twice)
        out.append(Advice(
            "checkpointed-twice",
            f"{summarise([c.name for c in twice])} recomputed {n} times per backward (checkpoint nested in "
            "checkpoint: e.g. gradient_checkpointing_enable() under apply_activation_checkpointing); the forward "
            f"runs {n + 1} times for the memory of one checkpoint",
            "enable one of the two: the library's gradient checkpointing or the wrapper",
        ))
    never = [c for c in report.census if c.recomputes == 0]
    if never and not any(NO_GRAD_WARNING in n for n in report.notes):
        out.append(Advice(
            "never-recomputed",
            f"{summarise([c.name for c in never])} checkpointed but never recomputed in backward: nothing in "
            "the loss's gradient needed them, so checkpointing them saves nothing",
            "checkpoint only regions whose outputs reach the loss and hold tensors backward needs",
        ))
    return out


def _hooks(report: Report) -> list[Advice]:
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    counts: dict[tuple[str, str], tuple[int, int]] = {}
    for h in report.side_effects:
        key = (h.kind, h.hook)
        groups[key].append(h.module)
        b, c = counts.get(key, (0, 0))
        counts[key] = (b + h.baseline, c + h.checkpointed)
    out = []
    for (kind, hook), modules in groups.items():
        b, c = counts[(kind, hook)]
        out.append(Advice(
            "hooks-rerun",
            f"{kind} {hook} on {len(modules)} modules ({summarise(modules, 4)}) ran {c} times, baseline {b}: the "
            "recompute runs hooks of modules inside checkpointed regions again; gradients can match while a "
            "hook that records (aux-loss tracker, activation statistics, call counter) counts twice",
            "record in the hook only once per step (e.g. skip when the module's step counter already "
            "recorded this step), or register the hook on a module outside the checkpointed region",
            "CKP201",
        ))
    return out
