"""Mutated real files (the repository's own sources and fixtures): never an internal error.

The long version is ``benchmarks/soak.py --minutes N`` (also hypothesmith
programs and the big real trees); this one runs in CI in seconds.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckptlint.engine import lint

from .hostile import mutate, seed_files

SEEDS = seed_files()


def test_there_are_real_seeds() -> None:
    assert len(SEEDS) > 50 and any(p.parent.name == "fixtures" for p in SEEDS)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.sampled_from(SEEDS), rng=st.randoms(use_true_random=False))
def test_mutated_real_files_never_crash_the_linter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: Path,
                                                   rng: random.Random) -> None:
    monkeypatch.chdir(tmp_path)
    data = mutate(seed.read_bytes(), rng)
    target = tmp_path / "mutant.py"
    target.write_bytes(data)
    result = lint([str(target)])
    assert result.errors == (), result.errors[0][1]
    for f in result.findings:
        assert f.line >= 1 and f.column >= 0 and f.path == "mutant.py"
