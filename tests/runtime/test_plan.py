"""runtime_checks.plan / apply_plan / measure_plan: exact under the memory model, applicable, verified."""

from __future__ import annotations

import dataclasses
import itertools
import random

import pytest
import torch

import runtime_checks
from runtime_checks.plan import PlanError, _predict, _Unit, parse_budget, pareto
from tests.runtime.planner_models import Stack, inputs

pytest.importorskip("scipy")


@pytest.fixture(scope="module")
def seq() -> tuple[Stack, runtime_checks.Profile]:
    torch.manual_seed(0)
    model = Stack(6)
    return model, runtime_checks.profile(model, inputs(), repeats=2)


@pytest.mark.parametrize(
    ("text", "expected"),
    [(1000, 1000), ("2GiB", 2 * 2**30), ("512 MB", 512 * 10**6), ("1.5KiB", 1536), ("60%", 600), ("0", 0)],
)
def test_parse_budget(text: object, expected: int) -> None:
    assert parse_budget(text, 1000) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["2 parsecs", "-1", "GiB", -5, True])
def test_parse_budget_rejects_with_the_value(bad: object) -> None:
    with pytest.raises(PlanError, match="budget"):
        parse_budget(bad, 1000)  # type: ignore[arg-type]


def test_plan_is_the_exact_optimum_over_every_subset(seq: tuple[Stack, runtime_checks.Profile]) -> None:
    _, prof = seq
    units = [_Unit(r.name, (i,), i) for i, r in enumerate(prof.regions)]
    for share in ("80%", "60%", "45%"):
        budget = parse_budget(share, prof.total_saved_bytes)
        best = min(
            (_predict(prof, list(c))[1] for k in range(len(units) + 1) for c in itertools.combinations(units, k)
             if _predict(prof, list(c))[0] <= budget),
            default=None,
        )
        p = runtime_checks.plan(prof, share, segments=False)
        assert p.predicted_bytes <= budget
        assert best is not None and p.predicted_recompute_s == pytest.approx(best, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_plan_is_exact_when_recompute_times_nearly_tie(seq: tuple[Stack, runtime_checks.Profile], seed: int) -> None:
    """Microsecond regions whose times differ by parts per million: HiGHS's default gaps would stop early."""
    _, measured = seq
    rng = random.Random(seed)
    base = rng.uniform(1e-5, 1e-3)
    prof = dataclasses.replace(measured, regions=[
        dataclasses.replace(r, recompute_s=base * (1 + rng.choice([0, 1e-6, 2e-6, 1e-3]))) for r in measured.regions])
    units = [_Unit(r.name, (i,), i) for i, r in enumerate(prof.regions)]
    for share in ("80%", "60%", "45%"):
        budget = parse_budget(share, prof.total_saved_bytes)
        best = min(_predict(prof, list(c))[1] for k in range(len(units) + 1)
                   for c in itertools.combinations(units, k) if _predict(prof, list(c))[0] <= budget)
        p = runtime_checks.plan(prof, share, segments=False)
        assert p.predicted_bytes <= budget
        assert p.predicted_recompute_s == pytest.approx(best, rel=1e-12, abs=0)


def test_plan_meets_the_budget_measured_and_beats_heuristics(seq: tuple[Stack, runtime_checks.Profile]) -> None:
    model, prof = seq
    p = runtime_checks.plan(prof, "40%")
    assert p.method == "milp" and p.regions
    m = runtime_checks.measure_plan(model, inputs(), p)
    assert m.measured_bytes == p.predicted_bytes  # the memory model is exact on this model
    assert m.measured_bytes <= p.budget_bytes
    assert m.equivalent is True
    for h in runtime_checks.heuristics(prof, "40%"):
        measured = runtime_checks.measure_plan(model, inputs(), h, check=False)
        assert measured.measured_bytes == h.predicted_bytes, h.method
        if h.meets_budget:
            assert p.predicted_recompute_s <= h.predicted_recompute_s + 1e-12, h.method


def test_infeasible_budget_names_the_floor(seq: tuple[Stack, runtime_checks.Profile]) -> None:
    _, prof = seq
    with pytest.raises(PlanError, match=r"budget '1%' .* cannot be met: the least activation memory"):
        runtime_checks.plan(prof, "1%")


def test_pareto_front_is_monotone(seq: tuple[Stack, runtime_checks.Profile]) -> None:
    _, prof = seq
    front = pareto(prof, points=8)
    assert len(front) >= 3
    for a, b in zip(front, front[1:]):
        assert a.predicted_bytes < b.predicted_bytes
        assert a.predicted_recompute_s >= b.predicted_recompute_s


def test_batchnorm_region_is_avoided_or_flagged_by_verify() -> None:
    model = Stack(4, batchnorm_at=1, sequential=False)
    prof = runtime_checks.profile(model, inputs(), repeats=1)
    safe = runtime_checks.plan(prof, "100%")
    assert "blocks.1" in dict(safe.avoided)
    floor = pareto(prof, points=2, allow_unsafe=True)[0].predicted_bytes
    every = runtime_checks.plan(prof, floor, allow_unsafe=True, segments=False)
    assert "blocks.1" in every.regions
    m = runtime_checks.measure_plan(model, inputs(), every)
    assert m.equivalent is False
    assert any(x.kind == "buffer" and "blocks.1" in x.name for x in m.report.mismatches)


def test_apply_plan_checkpoints_exactly_those_regions_and_remove_undoes_it() -> None:
    model = Stack(5, sequential=False)
    handle = runtime_checks.apply_plan(model, ["blocks.1", "blocks.3"])
    report = runtime_checks.verify(model, inputs())
    assert report.equivalent and sorted(report.regions) == ["blocks.1", "blocks.3"]
    handle.remove()
    assert all("forward" not in b.__dict__ for b in model.blocks)
    assert runtime_checks.verify(model, inputs()).regions == ()


def test_segments_of_a_sequential_apply_as_one_checkpoint_each(seq: tuple[Stack, runtime_checks.Profile]) -> None:
    model, _ = seq
    with runtime_checks.apply_plan(model, ["blocks.0..blocks.2", "blocks.4"]) as handle:
        report = runtime_checks.verify(model, inputs())
        assert handle.calls >= 2
    assert report.equivalent and sorted(report.regions) == ["blocks.0..blocks.2", "blocks.4"]
    with pytest.raises(PlanError, match="not a segment of one nn.Sequential"):
        runtime_checks.apply_plan(Stack(3, sequential=False), ["blocks.0..blocks.1"])


def test_settings_map_to_library_knobs(seq: tuple[Stack, runtime_checks.Profile]) -> None:
    model, prof = seq
    every1, every2, sqrt = runtime_checks.heuristics(prof)
    assert every1.settings == {"timm_checkpoint_seq_every": 1, "transformers_gradient_checkpointing_enable": True,
                               "every_n_layers": 1}
    assert every2.settings == {"every_n_layers": 2}
    assert sqrt.settings == {"timm_checkpoint_seq_every": 2}
    fn = every2.check_fn(model)
    assert [n for n, m in model.named_modules() if fn(m)] == ["blocks.0", "blocks.2", "blocks.4"]
    with pytest.raises(PlanError, match="segments"):
        sqrt.check_fn(model)


def test_apply_plan_refuses_a_model_that_checkpoints_itself() -> None:
    model = Stack(3, sequential=False, self_checkpoint=True)
    prof = runtime_checks.profile(model, inputs(), repeats=1)
    p = runtime_checks.plan(prof, "90%")
    with pytest.raises(PlanError, match="already checkpoints blocks.0"):
        runtime_checks.apply_plan(model, p)
