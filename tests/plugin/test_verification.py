"""The fixture, the marker, hypothesis integration and the terminal summary, against the real verifier.

Inner test sessions run in-process (torch is imported once by the outer session) on
models of a few hundred parameters, so each verification takes milliseconds.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("runtime_checks.verify")

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.usefixtures("warm_verifier")

ROOT = Path(__file__).resolve().parents[2]
CUDA = torch.cuda.is_available()


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """An in-process run that leaves hypothesis' global profile as it found it."""
    from hypothesis import settings

    profile = settings.get_current_profile_name()
    try:
        return pytester.runpytest_inprocess("-p", "no:cacheprovider", *args)
    finally:
        settings.load_profile(profile)


# ------------------------------------------------------------------------------------- fixture


def test_fixture_passes_on_clean_model_and_returns_report(models: pytest.Pytester) -> None:
    models.makepyfile(
        """
        import torch
        from models import Net

        def test_clean(ckpt_verify):
            report = ckpt_verify(Net(), torch.randn(4, 8, requires_grad=True))
            assert report.equivalent
            assert len(report.regions) == 3, report.regions
        """
    )
    _run(models).assert_outcomes(passed=1)


def test_fixture_fails_with_table_naming_region_and_parameter(models: pytest.Pytester) -> None:
    models.makepyfile(
        """
        import torch
        from models import hazardous

        def test_hazard(ckpt_verify):
            ckpt_verify(hazardous(), torch.randn(4, 8))
        """
    )
    result = _run(models)
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "AssertionError: checkpointed Net is not gradient-equivalent to its un-checkpointed baseline on cpu" in out
    assert "breaking equivalence: checkpoint region 'blocks.1'\n" in out
    worst = re.search(r"worst parameter: grad '([\w.]+)' in checkpoint region '([\w.]+)': max abs err", out)
    assert worst is not None, out
    assert worst.group(2) == "blocks.1" and worst.group(1).startswith("blocks.1."), worst.groups()
    # The traceback ends at the user's line: the plugin's frames are hidden (__tracebackhide__).
    assert "ckpt_verify(hazardous(), torch.randn(4, 8))" in out
    assert "_pytest_support.py" not in out and "def _verify_and_record" not in out, out
    assert "inputs: arg0: float32[4, 8]" in out
    result.stdout.fnmatch_lines(["*kind*name*max abs err*max rel err*region*"])  # the report table
    # the traceback stops at the test's own line: no frames from the verifier or the plugin
    assert "ckpt_verify(hazardous(), torch.randn(4, 8))" in out
    assert "runtime_checks/verify.py" not in out and "_pytest_support.py" not in out


def test_fixture_keywords_override_options(models: pytest.Pytester) -> None:
    """Explicit keywords beat the options: a huge tolerance hides the hazard, localize=False skips bisection."""
    models.makepyfile(
        """
        import pytest
        import torch
        from models import grad_mode_hazard, hazardous

        def test_tolerant(ckpt_verify):
            report = ckpt_verify(grad_mode_hazard(), torch.randn(4, 8), rtol=1e9, atol=1e9)
            assert report.equivalent

        def test_not_localised(ckpt_verify):
            with pytest.raises(AssertionError, match="region not localised"):
                ckpt_verify(hazardous(), torch.randn(4, 8), localize=False)
        """
    )
    _run(models, "--ckpt-rtol=0", "--ckpt-atol=0").assert_outcomes(passed=2)


def test_cli_tolerance_and_no_localize_reach_the_verifier(models: pytest.Pytester) -> None:
    models.makepyfile(
        """
        import torch
        from models import grad_mode_hazard, hazardous

        def test_numeric_hazard(ckpt_verify):
            ckpt_verify(grad_mode_hazard(), torch.randn(4, 8))

        def test_three_regions(ckpt_verify):
            ckpt_verify(hazardous(), torch.randn(4, 8))
        """
    )
    _run(models, "--ckpt-rtol=1e9", "--ckpt-atol=1e9", "-k", "numeric").assert_outcomes(passed=1)
    result = _run(models, "--ckpt-no-localize", "-k", "three_regions")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*(region not localised)*"])
    result = _run(models, "-k", "three_regions")
    result.assert_outcomes(failed=1)
    assert "(region not localised)" not in result.stdout.str()


def test_ini_tolerance_loses_to_marker(models: pytest.Pytester) -> None:
    models.makeini("[pytest]\nckpt_rtol = 1e9\nckpt_atol = 1e9\n")
    models.makepyfile(
        """
        import pytest
        import torch
        from models import grad_mode_hazard

        def test_ini_hides_it(ckpt_verify):
            ckpt_verify(grad_mode_hazard(), torch.randn(4, 8))

        @pytest.mark.ckpt_equivalence(rtol=0, atol=0)
        def test_marker_restores_strictness(ckpt_verify):
            ckpt_verify(grad_mode_hazard(), torch.randn(4, 8))
        """
    )
    result = _run(models)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*_ test_marker_restores_strictness _*", "*AssertionError: checkpointed GradModeNet*"])


# -------------------------------------------------------------------------------------- marker


def test_marker_forms(models: pytest.Pytester) -> None:
    models.makepyfile(
        """
        import pytest
        import torch
        from models import Net, Plain, clean, hazardous

        X = torch.randn(4, 8)

        @pytest.mark.ckpt_equivalence(model=clean, inputs=X)
        def test_everything_in_the_marker():
            pass

        @pytest.mark.ckpt_equivalence(inputs=X)
        def test_returns_model():
            return Net()

        @pytest.mark.ckpt_equivalence()
        def test_returns_model_and_inputs(tmp_path):
            return Net(), (torch.randn(2, 8, requires_grad=True),)

        @pytest.mark.ckpt_equivalence(inputs=lambda: torch.randn(3, 8))
        def test_inputs_factory():
            return Net()

        @pytest.mark.ckpt_equivalence(model=Plain, inputs=X, checkpoint=["blocks.0", "blocks.1"])
        def test_checkpoint_keyword_wraps_blocks():
            pass

        @pytest.mark.ckpt_equivalence(inputs=X)
        def test_returns_hazard():
            return hazardous()
        """
    )
    result = _run(models, "-W", "error::pytest.PytestReturnNotNoneWarning")
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_returns_hazard _*",
            "checkpointed Net is not gradient-equivalent*",
            "breaking equivalence: checkpoint region 'blocks.1'",
            "worst parameter: grad 'blocks.1.*' in checkpoint region 'blocks.1'*",
        ]
    )
    # the marker form fails with the diagnosis only: no traceback through plugin or verifier
    assert "_pytest_support.py" not in result.stdout.str()


def test_marker_on_generator_verifies_each_yield(models: pytest.Pytester) -> None:
    models.makepyfile(
        """
        import pytest
        import torch
        from models import Net, hazardous

        @pytest.mark.ckpt_equivalence(inputs=torch.randn(2, 8))
        def test_widths():
            for width in (8, 8):
                yield Net(width=width)

        @pytest.mark.parametrize("batch", [1, 3])
        @pytest.mark.ckpt_equivalence()
        def test_batches(batch):
            yield Net(), torch.randn(batch, 8)

        @pytest.mark.ckpt_equivalence(inputs=torch.randn(2, 8))
        def test_second_is_hazardous():
            yield Net()
            yield hazardous()

        @pytest.mark.ckpt_equivalence(inputs=torch.randn(2, 8))
        def test_yields_nothing():
            return
            yield
        """
    )
    result = _run(models)
    result.assert_outcomes(passed=3, failed=2)
    out = result.stdout.str()
    result.stdout.fnmatch_lines(["PASS *::test_widths [[]Net, 2 runs[]] on cpu"])
    assert "::test_batches[1] [Net] on cpu" in out and "::test_batches[3] [Net] on cpu" in out
    assert "::test_second_is_hazardous [Net, 2 runs, 1 failing] on cpu" in out
    assert "test_yields_nothing: the test yielded nothing" in out


def test_unmarked_generator_is_left_to_pytest(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_unmarked_generator():\n    yield 1\n")
    result = _run(pytester)
    result.stdout.fnmatch_lines(["*'yield' keyword is allowed in fixtures, but not in tests (test_unmarked_generator)*"])


def test_marker_usage_errors(models: pytest.Pytester) -> None:
    models.makepyfile(
        """
        import pytest
        import torch
        from models import Net

        @pytest.mark.ckpt_equivalence(inputs=torch.randn(2, 8))
        def test_returns_nothing():
            pass

        @pytest.mark.ckpt_equivalence(model=Net, inputs=torch.randn(2, 8))
        def test_model_twice():
            return Net()

        @pytest.mark.ckpt_equivalence()
        def test_no_inputs():
            return Net()
        """
    )
    result = _run(models)
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(
        [
            "*on test_returns_nothing: nothing to verify: give model= *",
            "*on test_model_twice: the test returned a model but the marker also has model=*",
            "*on test_no_inputs: no inputs: give inputs= *",
        ]
    )


def test_marker_body_failures_are_ordinary_failures(models: pytest.Pytester) -> None:
    models.makepyfile(
        """
        import pytest
        import torch

        @pytest.mark.ckpt_equivalence(inputs=torch.randn(2, 8))
        def test_body_asserts():
            assert 1 == 2, "the body's own check"
        """
    )
    result = _run(models)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*AssertionError: the body's own check*"])


def test_marker_verify_keywords_configure_the_fixture(models: pytest.Pytester) -> None:
    models.makepyfile(
        """
        import pytest
        import torch
        from models import Plain

        @pytest.mark.ckpt_equivalence(checkpoint=["blocks.0", "blocks.1"],
                                      checkpoint_kwargs={"use_reentrant": False})
        def test_marker_names_blocks(ckpt_verify):
            report = ckpt_verify(Plain(), torch.randn(4, 8), device="auto")
            assert sorted(report.regions) == ["blocks.0", "blocks.1"], report.regions

        @pytest.mark.ckpt_equivalence(checkpoint=["blocks.0", "blocks.1"])
        def test_call_keyword_wins(ckpt_verify):
            report = ckpt_verify(Plain(), torch.randn(4, 8), checkpoint=["blocks.1"])
            assert report.regions == ("blocks.1",), report.regions
        """
    )
    _run(models).assert_outcomes(passed=2)


def test_verifier_usage_error_is_one_line(models: pytest.Pytester) -> None:
    models.makepyfile(
        """
        import torch

        def not_a_factory():
            return 42

        def test_bad_factory(ckpt_verify):
            ckpt_verify(not_a_factory, torch.randn(2, 8))
        """
    )
    result = _run(models)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["ckpt_verify(not_a_factory(), ...): model factory 'not_a_factory' returned int*"])
    assert "verify.py" not in result.stdout.str()


def test_fixture_check_draws_inputs_with_hypothesis(models: pytest.Pytester) -> None:
    models.makepyfile(
        """
        from hypothesis import strategies as st
        from runtime_checks.strategies import tensors
        from models import Net, hazardous

        # constant elements: only the batch size is left to shrink, which keeps this test fast
        X = tensors(shape=("B", 8), elements=st.just(0.5))

        def test_clean(ckpt_verify):
            ckpt_verify.check(Net, X, examples=3)

        def test_hazard(ckpt_verify):
            ckpt_verify.check(hazardous, X)
        """
    )
    result = _run(models, "--ckpt-examples=4")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["PASS *::test_clean [[]Net, 3 runs[]] on cpu", "FAIL *::test_hazard [[]hazardous()*"])
    out = result.stdout.str()
    assert "inputs: arg0: float32[1, 8]" in out
    assert "_pytest_support.py" not in out


# -------------------------------------------------------------------------------------- device


@pytest.mark.skipif(CUDA, reason="checks the behaviour where CUDA is absent")
def test_cuda_without_cuda_skips_or_fails_with_require_device(models: pytest.Pytester) -> None:
    models.makepyfile(
        """
        import pytest
        import torch
        from models import Net

        def test_fixture(ckpt_verify):
            ckpt_verify(Net(), torch.randn(2, 8))

        @pytest.mark.ckpt_equivalence(inputs=torch.randn(2, 8))
        def test_marker():
            return Net()

        @pytest.mark.ckpt_equivalence(inputs=torch.randn(2, 8), device="cuda")
        def test_marker_asks_for_cuda():
            return Net()

        def test_unrelated():
            pass
        """
    )
    result = _run(models, "--ckpt-device=cuda", "-rs")
    result.assert_outcomes(passed=1, skipped=3)
    skipped = "SKIPPED [[]1[]] test_*.py:*: checkpoint-equivalence device 'cuda' requested but CUDA is not available*"
    result.stdout.fnmatch_lines([skipped])

    result = _run(models, "-rs")  # auto -> cpu, but the marker insists on cuda
    result.assert_outcomes(passed=3, skipped=1)

    result = _run(models, "--ckpt-device=cuda", "--ckpt-require-device")
    result.assert_outcomes(passed=1, errors=3)  # fails in setup, before the test body runs
    result.stdout.fnmatch_lines(["*CUDA is not available*and --ckpt-require-device is set*"])


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_device_runs_there(models: pytest.Pytester) -> None:
    models.makepyfile(
        """
        import torch
        from models import Net

        def test_on_cuda(ckpt_verify):
            report = ckpt_verify(Net(), torch.randn(2, 8))
            assert report.device.startswith("cuda"), report.device
        """
    )
    _run(models, "--ckpt-device=cuda", "--ckpt-require-device").assert_outcomes(passed=1)


# ---------------------------------------------------------------------------------- hypothesis


# Constant elements in the failing tests: the default elements come from a drawn 32-bit seed,
# which hypothesis spends ~100 verifications shrinking; only the shapes matter here.
_GIVEN_TESTS = """
    import torch
    from hypothesis import given, settings, strategies as st
    from runtime_checks.strategies import tensors
    from models import Net, hazardous

    @settings(max_examples=4)
    @given(x=tensors(shape=("B", 8), dims={"B": (1, 6)}))
    def test_clean(ckpt_verify, x):
        ckpt_verify(Net(), x)

    @settings(max_examples=6)
    @given(x=tensors(shape=("B", 8), dims={"B": (2, 6)}, elements=st.just(0.5)))
    def test_hazard(ckpt_verify, x):
        ckpt_verify(hazardous(), x)
"""


def test_given_with_fixture_shows_shrunk_shapes_and_seed(models: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)  # in CI the ckpt profile derandomizes: no seed to show
    models.makepyfile(_GIVEN_TESTS)
    result = _run(models, "--hypothesis-profile=ckpt")
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert re.search(r"(Falsifying example|Failing test case): test_hazard\(", out), out
    assert "inputs: arg0: float32[2, 8]" in out  # shrunk to the smallest batch allowed
    seed = re.search(r"hypothesis seed: (\d+); reproduce with: pytest '\S+::test_hazard' --hypothesis-seed=(\d+)", out)
    assert seed is not None and seed.group(1) == seed.group(2), out
    # the printed seed reproduces the failure
    again = _run(models, "--hypothesis-profile=ckpt", f"--hypothesis-seed={seed.group(1)}", "-k", "test_hazard")
    again.assert_outcomes(failed=1)
    again.stdout.fnmatch_lines([f"*hypothesis seed: {seed.group(1)}*"])


def test_marker_with_strategy_runs_examples_and_shrinks(models: pytest.Pytester) -> None:
    models.makepyfile(
        """
        import pytest
        from hypothesis import strategies as st
        from runtime_checks.strategies import tensors
        from models import Net, hazardous

        X = tensors(shape=("B", 8), dims={"B": (1, 5)})

        @pytest.mark.ckpt_equivalence(inputs=X, examples=3)
        def test_clean():
            return Net()

        @pytest.mark.ckpt_equivalence(inputs=tensors(shape=("B", 8), dims={"B": (1, 5)}, elements=st.just(0.5)))
        def test_hazard():
            return hazardous()
        """
    )
    result = _run(models, "--ckpt-examples=5", "--hypothesis-seed=1234")
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert "inputs: arg0: float32[1, 8]" in out
    assert "hypothesis seed: 1234 (--hypothesis-seed); reproduce with: pytest" in out
    assert re.search(r"(Falsifying example|Failing test case): ckpt_equivalence\(", out), out
    # the summary counts the examples the clean test ran: its marker's 3 beat --ckpt-examples=5
    result.stdout.fnmatch_lines(["PASS *::test_clean [[]Net, 3 runs[]] on cpu"])


def test_marker_strategy_runs_are_derandomized_in_ci(models: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    models.makepyfile(
        """
        import pytest
        from hypothesis import strategies as st
        from runtime_checks.strategies import tensors
        from models import hazardous

        @pytest.mark.ckpt_equivalence(inputs=tensors(shape=("B", 8), elements=st.just(0.5)), examples=2)
        def test_hazard():
            return hazardous()
        """
    )
    monkeypatch.setenv("CI", "true")
    result = _run(models)
    result.assert_outcomes(failed=1)
    # hypothesis itself loads its derandomized "ci" profile when CI is set; either way: seed 0
    result.stdout.re_match_lines([r"hypothesis seed: 0 \(derandomized (because CI is set|profile)\); reproduce with: "])
    result = _run(models, "--hypothesis-seed=nightly")  # hypothesis accepts any string as a seed
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["hypothesis seed: nightly (--hypothesis-seed); reproduce with: *--hypothesis-seed=nightly"])


# ------------------------------------------------------------------------------------- summary


def test_terminal_summary_lists_each_verified_model(models: pytest.Pytester) -> None:
    models.makepyfile(
        """
        import pytest
        import torch
        from models import Net, hazardous

        def test_clean(ckpt_verify):
            ckpt_verify(Net(), torch.randn(4, 8))

        @pytest.mark.ckpt_equivalence(inputs=torch.randn(4, 8))
        def test_hazard():
            return hazardous()

        def test_not_using_the_plugin():
            pass
        """
    )
    result = _run(models)
    result.assert_outcomes(passed=2, failed=1)
    lines = result.outlines
    start = next(i for i, line in enumerate(lines) if "ckptlint: gradient-checkpoint equivalence" in line)
    section = lines[start + 1 : start + 7]
    assert re.fullmatch(r"PASS \S+::test_clean \[Net\] on cpu", section[0]), section
    assert section[1] == "    worst error: none"
    # A model this small keeps more than it frees (inputs, RNG states): said plainly, never negative.
    assert re.fullmatch(r"    activation memory saved: (none \(checkpointing keeps [\d.]+ (B|KiB), frees [\d.]+ (B|KiB)\)|"
                        r"[\d.]+ (B|KiB) of [\d.]+ (B|KiB) \(\d+%\)); "
                        r"recompute overhead: [\d.]+x baseline time", section[2]), section[2]
    assert re.fullmatch(r"FAIL \S+::test_hazard \[Net\] on cpu", section[3]), section
    assert re.fullmatch(r"    worst error: .*?(worst parameter: )?grad 'blocks\.1\.[\w.]+' in region 'blocks\.1': "
                        r"abs \S+(, rel \S+)?", section[4]), section[4]
    assert "test_not_using_the_plugin" not in "\n".join(lines[start:])


def test_no_summary_when_nothing_was_verified(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    result = _run(pytester)
    # The header lists every installed plugin (ckptlint among them); nothing else may name it.
    shown = "\n".join(line for line in result.stdout.lines if not line.startswith("plugins:"))
    assert "ckptlint" not in shown


# ------------------------------------------------------------------------------------- example


def test_example_file_shows_one_pass_and_one_named_failure(pytester: pytest.Pytester) -> None:
    example = ROOT / "examples" / "test_example_equivalence.py"
    pytester.makepyfile(test_example_equivalence=example.read_text())
    result = _run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_dropout_without_rng_preservation _*",
            "checkpointed Net is not gradient-equivalent*",
            "breaking equivalence: checkpoint region 'blocks.1'",
            "worst parameter: grad 'blocks.1.*' in checkpoint region 'blocks.1'*",
        ]
    )


def test_examples_are_outside_the_project_testpaths() -> None:
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["tool"]["pytest"]["ini_options"]["testpaths"] == ["tests"]


def test_docs_show_the_example_file_verbatim() -> None:
    docs = (ROOT / "docs" / "pytest.md").read_text()
    example = (ROOT / "examples" / "test_example_equivalence.py").read_text()
    blocks = re.findall(r"```python\n(.*?)```", docs, flags=re.DOTALL)
    assert example in blocks


def test_results_reach_junit_xml(models: pytest.Pytester) -> None:
    models.makepyfile(
        """
        import torch
        from models import Plain

        def test_plain_blocks(ckpt_verify):
            report = ckpt_verify(Plain(), torch.randn(1024, 8), checkpoint=["blocks.0", "blocks.1"])
            assert report.memory.saved_bytes_saved > 0
        """
    )
    result = _run(models, "--junitxml=out.xml")
    result.assert_outcomes(passed=1)
    xml = (models.path / "out.xml").read_text()
    assert '<property name="ckptlint" value="{' in xml and "&quot;model&quot;: &quot;Plain&quot;" in xml


def test_summary_collects_results_from_xdist_workers(models: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    models.makepyfile(
        """
        import torch
        from models import Net

        def test_clean(ckpt_verify):
            ckpt_verify(Net(), torch.randn(2, 8))
        """
    )
    result = models.runpytest_subprocess("-p", "no:cacheprovider", "-n", "1")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*ckptlint: gradient-checkpoint equivalence*", "PASS *::test_clean [[]Net[]] on cpu"])
