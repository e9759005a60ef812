"""Which regions to checkpoint under an activation-memory budget, exactly, and the heuristics to compare with.

Memory model (non-reentrant checkpointing). A storage saved for backward
stays resident after the forward if code outside every region saves it, if
any region that saves it is not checkpointed, or if a checkpointed unit
receives it as an input (checkpoint keeps its inputs to rerun the function);
each checkpointed unit also stashes the RNG state. A *unit* is one candidate
region, or a run of consecutive children of an ``nn.Sequential`` (a segment:
it keeps only the first child's inputs, like ``checkpoint_seq(every=k)``).
The recompute cost of a unit is the forward time of its regions. The
activations a unit rebuilds transiently during backward are not counted:
the budget bounds what is held between forward and backward.

``plan`` solves the choice as a mixed-integer program with
``scipy.optimize.milp`` (HiGHS): binary ``x_u`` per unit, ``y_g`` in [0, 1]
per storage group, minimise recompute time subject to the bytes of the
resident groups fitting the budget; a second solve at that time picks the
least memory among the fastest plans.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from runtime_checks.profile import Profile

__all__ = ["Plan", "PlanError", "heuristics", "pareto", "parse_budget", "plan"]

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


class PlanError(ValueError):
    """A budget that cannot be read or met, or a plan that cannot be applied; the message names the value."""


@dataclass(frozen=True)
class Plan:
    """A set of regions to checkpoint and what the profile predicts for it.

    ``regions``: module paths (a segment of an ``nn.Sequential`` reads
    ``blocks.0..blocks.3``). ``predicted_bytes``: activation bytes resident
    between forward and backward; ``predicted_recompute_s``: forward time
    rerun during backward. ``avoided``: regions left out, with the reason.
    """

    regions: tuple[str, ...]
    predicted_bytes: int
    predicted_recompute_s: float
    budget_bytes: int | None
    method: str
    unchecked_bytes: int
    avoided: tuple[tuple[str, str], ...] = ()
    settings: dict[str, object] = field(default_factory=dict)
    model_checkpointed: tuple[str, ...] = ()

    @property
    def meets_budget(self) -> bool:
        return self.budget_bytes is None or self.predicted_bytes <= self.budget_bytes

    def check_fn(self, model: object) -> Callable[[object], bool]:
        """A ``check_fn`` for ``apply_activation_checkpointing(model, check_fn=...)`` selecting exactly these regions."""
        if any(".." in r for r in self.regions):
            raise PlanError(f"plan {self.method!r} has segments {[r for r in self.regions if '..' in r]}: no check_fn selects a segment")
        wanted = {id(model.get_submodule(r)) for r in self.regions}  # type: ignore[attr-defined]
        return lambda module: id(module) in wanted

    def to_dict(self) -> dict[str, object]:
        return {
            "method": self.method,
            "regions": list(self.regions),
            "predicted_bytes": self.predicted_bytes,
            "predicted_recompute_s": self.predicted_recompute_s,
            "budget_bytes": self.budget_bytes,
            "unchecked_bytes": self.unchecked_bytes,
            "meets_budget": self.meets_budget,
            "avoided": [{"region": r, "reason": why} for r, why in self.avoided],
            "settings": dict(self.settings),
        }


@dataclass(frozen=True)
class _Unit:
    name: str
    members: tuple[int, ...]
    keeper: int


# ----------------------------------------------------------------------------- budget
def parse_budget(budget: int | float | str, unchecked_bytes: int, *, where: str = "budget") -> int:
    """Bytes from ``2147483648``, ``"2GiB"``, ``"512 MB"`` or ``"60%"`` (of the unchecked activation bytes)."""
    if isinstance(budget, bool):
        raise PlanError(f"{where} {budget!r} is not a size")
    if isinstance(budget, (int, float)):
        if budget < 0 or math.isnan(budget):
            raise PlanError(f"{where} {budget!r} must be >= 0 bytes")
        return int(budget)
    text = str(budget).strip()
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*%", text)
    if m:
        return int(float(m.group(1)) / 100 * unchecked_bytes)
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise PlanError(f"{where} {budget!r} is not a size: use bytes, e.g. 2GiB, 512MB, or a share such as 60%")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


# ----------------------------------------------------------------------------- units and prediction
def _units(prof: Profile, segments: bool) -> list[_Unit]:
    units = [_Unit(r.name, (i,), i) for i, r in enumerate(prof.regions)]
    if not segments:
        return units
    for container, members in _containers(prof).items():
        if not prof.sequential.get(container, False):
            continue
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                first, last = prof.regions[members[a]].name, prof.regions[members[b]].name
                units.append(_Unit(f"{first}..{last}", tuple(members[a : b + 1]), members[a]))
    return units


def _containers(prof: Profile) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, r in enumerate(prof.regions):
        out.setdefault(r.container, []).append(i)
    return out


def _predict(prof: Profile, chosen: Sequence[_Unit]) -> tuple[int, float]:
    removed = {m for u in chosen for m in u.members}
    keepers = {u.keeper for u in chosen}
    total = prof.rng_bytes * len(chosen)
    for g in prof.groups:
        if g.outside or (g.saved_by - removed) or (g.kept_by & keepers):
            total += g.nbytes
    return total, sum(prof.regions[m].recompute_s for u in chosen for m in u.members)


def _make(prof: Profile, chosen: Sequence[_Unit], method: str, budget: int | None, avoided: tuple[tuple[str, str], ...] = ()) -> Plan:
    nbytes, seconds = _predict(prof, chosen)
    names = tuple(u.name for u in sorted(chosen, key=lambda u: u.members[0]))
    return Plan(
        names, nbytes, seconds, budget, method, prof.total_saved_bytes, avoided, _settings(prof, chosen), prof.model_checkpointed
    )


def _settings(prof: Profile, chosen: Sequence[_Unit]) -> dict[str, object]:
    """The library knobs that express the plan, where one does."""
    out: dict[str, object] = {}
    if not chosen:
        return out
    containers = _containers(prof)
    used = {prof.regions[u.members[0]].container for u in chosen}
    if len(used) != 1 or len(containers) != 1:
        return out
    members = containers[next(iter(used))]
    sizes = {len(u.members) for u in chosen}
    covered = sorted(m for u in chosen for m in u.members)
    if len(sizes) == 1 and covered == members:
        k = sizes.pop()
        if prof.sequential.get(next(iter(used)), False):
            out["timm_checkpoint_seq_every"] = k
        if k == 1:
            out["transformers_gradient_checkpointing_enable"] = True
    starts = sorted(u.members[0] for u in chosen)
    if all(len(u.members) == 1 for u in chosen) and len(starts) >= 1:
        for k in range(1, len(members) + 1):
            if starts == [m for j, m in enumerate(members) if j % k == 0]:
                out["every_n_layers"] = k
                break
    return out


# ----------------------------------------------------------------------------- the exact plan
def plan(
    prof: Profile,
    budget: int | float | str,
    *,
    allow_unsafe: bool = False,
    segments: bool = True,
) -> Plan:
    """The set of regions whose checkpointing fits ``budget`` with the least recompute time.

    ``budget``: activation bytes held between forward and backward (an int,
    ``"2GiB"``, or ``"60%"`` of the unchecked activation bytes). Regions
    marked unsafe by the profile (BatchNorm in train mode) are avoided unless
    ``allow_unsafe``. ``segments=False`` keeps to one region per checkpoint.
    Raises ``PlanError`` when no plan fits, naming the least memory any plan reaches.
    """
    limit = parse_budget(budget, prof.total_saved_bytes)
    units = _units(prof, segments)
    avoided = () if allow_unsafe else tuple((r.name, r.unsafe) for r in prof.regions if r.unsafe)
    banned = {i for i, r in enumerate(prof.regions) if r.unsafe and not allow_unsafe}
    allowed = [u for u in units if not (set(u.members) & banned)]
    chosen = _solve(prof, allowed, limit)
    if chosen is None:
        floor = _solve(prof, allowed, None)
        least = _predict(prof, floor or [])[0]
        extra = f"; {len(avoided)} unsafe region(s) avoided (allow_unsafe=True to consider them)" if avoided else ""
        raise PlanError(
            f"budget {budget!r} ({_fmt(limit)}) cannot be met: the least activation memory any plan reaches is "
            f"{_fmt(least)} of {_fmt(prof.total_saved_bytes)} unchecked{extra}"
        )
    return _make(prof, chosen, "milp", limit, avoided)


def _solve(prof: Profile, units: list[_Unit], limit: int | None) -> list[_Unit] | None:
    """Least recompute time under ``limit`` (or, with ``limit=None``, least memory); ``None`` if infeasible."""
    import numpy as np
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_array

    nu, groups = len(units), prof.groups
    ng = len(groups)
    scale = float(max(prof.total_saved_bytes, 1))
    times = np.array([sum(prof.regions[m].recompute_s for m in u.members) for u in units])
    sizes = np.array([g.nbytes / scale for g in groups])
    rows: list[tuple[dict[int, float], float, float]] = []
    by_member: dict[int, list[int]] = {}
    by_keeper: dict[int, list[int]] = {}
    for j, u in enumerate(units):
        for m in u.members:
            by_member.setdefault(m, []).append(j)
        by_keeper.setdefault(u.keeper, []).append(j)
    for js in by_member.values():  # each region in at most one unit
        rows.append(({j: 1.0 for j in js}, -np.inf, 1.0))
    for k, g in enumerate(groups):
        for r in g.saved_by:  # y_g + sum(x_u: u covers r) >= 1
            rows.append(({nu + k: 1.0, **{j: 1.0 for j in by_member.get(r, [])}}, 1.0, np.inf))
        for r in g.kept_by:  # y_g >= x_u for each unit that keeps it
            for j in by_keeper.get(r, []):
                rows.append(({nu + k: 1.0, j: -1.0}, 0.0, np.inf))
    memory = np.concatenate([np.full(nu, prof.rng_bytes / scale), sizes])
    ri, ci, vals = [], [], []
    lo, hi = np.empty(len(rows)), np.empty(len(rows))
    for i, (coef, low, high) in enumerate(rows):
        for j, v in coef.items():
            ri.append(i)
            ci.append(j)
            vals.append(v)
        lo[i], hi[i] = low, high
    a = coo_array((vals, (ri, ci)), shape=(len(rows), nu + ng)).tocsr()
    cons = [LinearConstraint(a, lo, hi)] if rows else []
    lb = np.concatenate([np.zeros(nu), [1.0 if g.outside else 0.0 for g in groups]])
    bounds = Bounds(lb, np.ones(nu + ng))
    integrality = np.concatenate([np.ones(nu), np.zeros(ng)])
    # Exact, not HiGHS's default 0.01% gap; its absolute gap (1e-6, not settable through scipy) is
    # made negligible by scaling the recompute times to sum to 1e6.
    exact = {"mip_rel_gap": 0.0}
    if limit is None:
        res = milp(memory, constraints=cons, bounds=bounds, integrality=integrality, options=exact)
        if res.status != 0 or res.x is None:
            return None
        return [u for j, u in enumerate(units) if res.x[j] > 0.5]
    budget_row = LinearConstraint(memory.reshape(1, -1), -np.inf, limit / scale + 1e-12)
    objective = np.concatenate([times * (1e6 / max(float(times.sum()), 1e-300)), np.zeros(ng)])
    res = milp(objective, constraints=[*cons, budget_row], bounds=bounds, integrality=integrality, options=exact)
    if res.status != 0 or res.x is None:
        return None
    chosen = [j for j in range(nu) if res.x[j] > 0.5]
    # Among the fastest plans, the one that holds least; kept only if it is really as fast.
    fastest = LinearConstraint(objective.reshape(1, -1), -np.inf, res.fun + 1e-3)
    res2 = milp(memory, constraints=[*cons, budget_row, fastest], bounds=bounds, integrality=integrality,
                options=exact)
    if res2.status == 0 and res2.x is not None:
        other = [j for j in range(nu) if res2.x[j] > 0.5]
        if sum(times[j] for j in other) <= sum(times[j] for j in chosen):
            chosen = other
    return [units[j] for j in chosen]


# ----------------------------------------------------------------------------- heuristics
def heuristics(prof: Profile, budget: int | float | str | None = None) -> list[Plan]:
    """What users do today: every block, every 2nd block, and sqrt(n) segments per container.

    The sqrt(n) plan (Chen et al. 2016: segments of round(sqrt(n)) consecutive
    blocks, each checkpointed as one) needs every container to be an
    ``nn.Sequential`` (a ``ModuleList`` is looped over by the model's own
    code, where no segment can be cut); elsewhere it is left out.
    """
    limit = parse_budget(budget, prof.total_saved_bytes) if budget is not None else None
    containers = _containers(prof)
    every1 = [_Unit(prof.regions[m].name, (m,), m) for ms in containers.values() for m in ms]
    every2 = [_Unit(prof.regions[m].name, (m,), m) for ms in containers.values() for j, m in enumerate(ms) if j % 2 == 0]
    out = [_make(prof, every1, "all-blocks", limit), _make(prof, every2, "every-2nd", limit)]
    seg: list[_Unit] = []
    for container, ms in containers.items():
        if not prof.sequential.get(container, False):
            seg = []
            break
        k = max(1, round(math.sqrt(len(ms))))
        for a in range(0, len(ms), k):
            part = ms[a : a + k]
            name = prof.regions[part[0]].name if len(part) == 1 else f"{prof.regions[part[0]].name}..{prof.regions[part[-1]].name}"
            seg.append(_Unit(name, tuple(part), part[0]))
    if seg:
        out.append(_make(prof, seg, "sqrt-n-segments", limit))
    return out


def pareto(prof: Profile, points: int = 12, *, allow_unsafe: bool = False) -> list[Plan]:
    """Optimal plans over a range of budgets, from the least memory reachable to none checkpointed."""
    units = [u for u in _units(prof, True) if allow_unsafe or not any(prof.regions[m].unsafe for m in u.members)]
    floor = _solve(prof, units, None) or []
    low = _predict(prof, floor)[0]
    high = prof.total_saved_bytes
    plans: dict[tuple[str, ...], Plan] = {}
    for i in range(points):
        limit = int(low + (high - low) * i / max(points - 1, 1))
        chosen = _solve(prof, units, limit)
        if chosen is not None:
            p = _make(prof, chosen, "milp", limit)
            plans.setdefault(p.regions, p)
    return sorted(plans.values(), key=lambda p: p.predicted_bytes)


def _fmt(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"
