"""min_saved / max_overhead: marker > CLI > ini, failing with the measured numbers."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.usefixtures("warm_verifier")

TESTS = """
import pytest, torch
from models import Net

# Wide enough that activations outweigh the RNG states checkpointing stashes per region.
X = torch.randn(256, 64)

def wide():
    return Net(64)

@pytest.mark.ckpt_equivalence(model=wide, inputs=X, min_saved="99%")
def test_needs_99():
    pass

@pytest.mark.ckpt_equivalence(model=wide, inputs=X, min_saved="1%", max_overhead=1000)
def test_needs_1():
    pass

@pytest.mark.ckpt_equivalence(model=wide, inputs=X)
def test_no_marker_threshold():
    pass

@pytest.mark.ckpt_equivalence(model=lambda: Net(256), inputs=torch.randn(512, 256), localize=False)
def test_wide():
    pass
"""


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    from hypothesis import settings

    profile = settings.get_current_profile_name()
    try:
        return pytester.runpytest_inprocess("-p", "no:cacheprovider", *args)
    finally:
        settings.load_profile(profile)


def test_marker_min_saved_fails_with_the_measured_share(models: pytest.Pytester) -> None:
    models.makepyfile(test_t=TESTS)
    result = _run(models, "-k", "not wide")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        ["*ckpt_equivalence thresholds: checkpointing frees * KiB of * KiB saved for backward (*%), "
         "below min_saved='99%' (@pytest.mark.ckpt_equivalence(min_saved=...)); regions: blocks.0, blocks.1, blocks.2*"]
    )
    # The summary agrees with the outcome: an equivalent model that misses a threshold is a FAIL.
    summary = result.stdout.str().split("ckptlint: gradient-checkpoint equivalence")[1]
    assert "FAIL test_t.py::test_needs_99" in summary and "PASS test_t.py::test_needs_1" in summary, summary
    result.stdout.fnmatch_lines(["*threshold missed: checkpointing frees * below min_saved='99%'*"])


def test_cli_and_ini_apply_where_the_marker_is_silent(models: pytest.Pytester) -> None:
    models.makepyfile(test_t=TESTS)
    models.makeini("[pytest]\nckpt_min_saved = 99%\n")
    result = _run(models, "-k", "not wide")
    result.assert_outcomes(passed=1, failed=2)  # test_needs_1 keeps its own 1%
    result.stdout.fnmatch_lines(["*below min_saved='99%' (tox.ini ckpt_min_saved)*"])
    result = _run(models, "--ckpt-min-saved=2%", "-k", "not wide")
    result.assert_outcomes(passed=2, failed=1)  # the command line wins over the ini file


def test_max_overhead_fails_with_both_step_times(models: pytest.Pytester) -> None:
    models.makepyfile(test_t=TESTS)
    # Recompute reruns the forward: the wide model's checkpointed step is measurably slower.
    result = _run(models, "--ckpt-max-overhead=1", "-k", "wide")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*ckpt_equivalence thresholds: a checkpointed step takes *x the bypassed one (* ms vs * ms, fastest of 3), "
                                 "above max_overhead=1 (--ckpt-max-overhead)*"])


@pytest.mark.parametrize(("flag", "message"), [("--ckpt-min-saved=lots", "invalid min_saved 'lots'"),
                                               ("--ckpt-max-overhead=0.5", "invalid max_overhead '0.5'")])
def test_bad_values_are_usage_errors_naming_the_option(models: pytest.Pytester, flag: str, message: str) -> None:
    models.makepyfile(test_t=TESTS)
    result = _run(models, flag)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{flag.split('=')[0]}: {message}*"])
