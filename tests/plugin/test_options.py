"""Plugin registration, options, ini keys, marker validation and lazy imports.

None of these need torch in the inner runs; where a subprocess is used it is to get a
fresh interpreter whose ``sys.modules`` tells what the plugin imported.
"""

from __future__ import annotations

import importlib.metadata
import sys
import textwrap

import pytest

from runtime_checks import pytest_plugin
from runtime_checks.pytest_plugin import CkptOptions, OptionError, options_for_item

pytest_plugins = ["pytester"]


def test_entry_point_names_the_plugin_module() -> None:
    points = importlib.metadata.entry_points(group="pytest11")
    ours = [point for point in points if point.name == "ckptlint"]
    assert [point.value for point in ours] == ["runtime_checks.pytest_plugin"]


def test_plugin_is_discovered_by_pytest(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_loaded(request):
            plugin = request.config.pluginmanager.get_plugin("ckptlint")
            assert plugin is not None and plugin.__name__ == "runtime_checks.pytest_plugin"
        """
    )
    pytester.runpytest_inprocess().assert_outcomes(passed=1)


def test_help_lists_every_option_and_ini_key(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess("--help")
    text = result.stdout.str()
    for flag in ("--ckpt-device", "--ckpt-examples", "--ckpt-rtol", "--ckpt-atol", "--ckpt-no-localize",
                 "--ckpt-require-device"):
        assert flag in text
    types = {"ckpt_device": "string", "ckpt_examples": "int", "ckpt_rtol": "float", "ckpt_atol": "float",
             "ckpt_no_localize": "bool", "ckpt_require_device": "bool"}
    for key, typ in types.items():
        assert f"{key} ({typ})" in text


_SHOW_OPTIONS = """
    import pytest

    def test_show(request):
        from runtime_checks.pytest_plugin import _options_key
        print("\\nOPTIONS", request.config.stash[_options_key])
"""


def _options_line(result: pytest.RunResult) -> str:
    lines = [line for line in result.outlines if line.startswith("OPTIONS")]
    assert lines, result.stdout.str()
    return lines[0]


def test_defaults(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(_SHOW_OPTIONS)
    result = pytester.runpytest_inprocess("-s")
    assert _options_line(result) == f"OPTIONS {CkptOptions()}"
    assert CkptOptions() == CkptOptions("auto", 10, None, None, True, False)


def test_ini_values_are_read(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        """
        [pytest]
        ckpt_device = cpu
        ckpt_examples = 3
        ckpt_rtol = 0.5
        ckpt_atol = 1e-3
        ckpt_no_localize = true
        ckpt_require_device = yes
        """
    )
    pytester.makepyfile(_SHOW_OPTIONS)
    line = _options_line(pytester.runpytest_inprocess("-s"))
    assert line == f"OPTIONS {CkptOptions('cpu', 3, 0.5, 1e-3, False, True)}"


def test_cli_overrides_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        """
        [pytest]
        ckpt_device = cuda
        ckpt_examples = 3
        ckpt_rtol = 0.5
        """
    )
    pytester.makepyfile(_SHOW_OPTIONS)
    result = pytester.runpytest_inprocess("-s", "--ckpt-device=cpu", "--ckpt-examples", "7", "--ckpt-atol=2",
                                          "--ckpt-no-localize")
    assert _options_line(result) == f"OPTIONS {CkptOptions('cpu', 7, 0.5, 2.0, False, False)}"


def test_pyproject_ini_section_is_read(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml(
        """
        [tool.pytest.ini_options]
        ckpt_examples = "4"
        """
    )
    pytester.makepyfile(_SHOW_OPTIONS)
    assert "examples=4" in _options_line(pytester.runpytest_inprocess("-s"))


def test_marker_overrides_cli_and_ini(pytester: pytest.Pytester) -> None:
    """marker > CLI > ini, checked on the options the fixture would use (no torch needed)."""
    pytester.makeini(
        """
        [pytest]
        ckpt_rtol = 0.5
        ckpt_atol = 0.25
        ckpt_examples = 3
        """
    )
    pytester.makepyfile(
        """
        import pytest
        from runtime_checks.pytest_plugin import item_options

        @pytest.mark.ckpt_equivalence(examples=9, device="cpu", atol=0.125)
        def test_marked(request):
            print("\\nOPTIONS", item_options(request.node))

        def _noop():
            pass
        """
    )
    # the marked test returns None and has no model=: it fails *after* printing, which is fine
    result = pytester.runpytest_inprocess("-s", "--ckpt-examples=5", "--ckpt-rtol=0.75", "--ckpt-device=cuda")
    assert _options_line(result) == f"OPTIONS {CkptOptions('cpu', 9, 0.75, 0.125, True, False)}"


def test_class_and_function_markers_merge_closest_first(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from runtime_checks.pytest_plugin import item_options

        @pytest.mark.ckpt_equivalence(examples=4, device="cpu", rtol=0.5)
        class TestGroup:
            @pytest.mark.ckpt_equivalence(examples=7)
            def test_method(self, request):
                print("\\nOPTIONS", item_options(request.node))
        """
    )
    result = pytester.runpytest_inprocess("-s")
    assert _options_line(result) == f"OPTIONS {CkptOptions('cpu', 7, 0.5, None, True, False)}"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--ckpt-examples=abc"], "--ckpt-examples: invalid number of examples 'abc'"),
        (["--ckpt-examples=0"], "--ckpt-examples: invalid number of examples '0'"),
        (["--ckpt-rtol=-1"], "--ckpt-rtol: invalid tolerance '-1'"),
        (["--ckpt-atol=nan"], "--ckpt-atol: invalid tolerance 'nan'"),
        (["--ckpt-device=tpu"], "--ckpt-device: invalid device 'tpu'"),
    ],
)
def test_bad_cli_value_is_a_one_line_usage_error(pytester: pytest.Pytester, args: list[str], fragment: str) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest_inprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if line.startswith("ERROR:")]
    assert len(errors) == 1 and fragment in errors[0], result.errlines
    assert "Traceback" not in result.stderr.str()


def test_bad_ini_value_names_the_file_and_key(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nckpt_no_localize = maybe\n")
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest_inprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: tox.ini ckpt_no_localize: invalid value (invalid truth value 'maybe')"])


def test_bad_pyproject_value_names_the_table(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml('[tool.pytest.ini_options]\nckpt_device = "gpu"\n')
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest_inprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: pyproject.toml [[]tool.pytest.ini_options[]] ckpt_device: invalid device 'gpu'*"])


def test_marker_is_registered_under_strict_markers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.ckpt_equivalence(device="cpu")
        def test_marked():
            pass
        """
    )
    result = pytester.runpytest_inprocess("--strict-markers", "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result = pytester.runpytest_inprocess("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.ckpt_equivalence(model=*"])


def test_unknown_marker_keyword_fails_naming_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.ckpt_equivalence(exmaples=3)
        def test_typo():
            pass

        def test_other():
            pass
        """
    )
    result = pytester.runpytest_inprocess("--strict-markers")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*@pytest.mark.ckpt_equivalence: unknown keyword 'exmaples' (expected one of: model, *"])
    assert "Traceback" not in result.stdout.str()


def test_positional_marker_argument_is_rejected(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.ckpt_equivalence("model")
        def test_positional():
            pass
        """
    )
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*takes keyword arguments only, got positional 'model'*"])


def test_bad_marker_value_names_marker_and_value(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.ckpt_equivalence(examples=-2)
        def test_bad():
            pass
        """
    )
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*@pytest.mark.ckpt_equivalence(examples=...): invalid number of examples -2*"])


def test_options_for_item_unit() -> None:
    base = CkptOptions(device="cuda", examples=5, rtol=0.1)
    assert options_for_item(base, None) is base
    merged = options_for_item(base, {"device": "cuda:1", "rtol": 0, "localize": False, "model": object()})
    assert merged == CkptOptions("cuda:1", 5, 0.0, None, False, False)
    with pytest.raises(OptionError, match="invalid device 'xpu'"):
        options_for_item(base, {"device": "xpu"})
    with pytest.raises(OptionError, match="invalid number of examples True"):
        options_for_item(base, {"examples": True})


def test_summary_formatting_unit() -> None:
    rows = pytest_plugin._aggregate(
        "t.py::test_a",
        [
            {"model": "Net", "equivalent": True, "device": "cpu", "worst": None, "saved_bytes": 1024,
             "baseline_bytes": 4096, "checkpointed_bytes": 3072, "ratio": 1.5},
            {"model": "Net", "equivalent": False, "device": "cpu",
             "worst": {"kind": "grad", "name": "blocks.1.fc1.weight", "region": "blocks.1", "abs": 0.5, "rel": 0.25},
             "saved_bytes": 2048, "baseline_bytes": 8192, "checkpointed_bytes": 6144, "ratio": 1.25},
            {"model": "Net", "equivalent": False, "device": "cpu",
             "worst": {"kind": "missing_grad", "name": "blocks.0.fc1.weight", "region": "blocks.0", "abs": None,
                       "rel": None},
             "saved_bytes": 512, "baseline_bytes": 1024, "checkpointed_bytes": 512, "ratio": 2.0},
        ],
    )
    assert len(rows) == 1
    row = rows[0]
    assert (row["runs"], row["failures"], row["equivalent"]) == (3, 2, False)
    assert row["worst"]["kind"] == "missing_grad"  # a missing gradient outranks any finite error
    assert row["ratio"] == 1.5 and row["saved_bytes"] == 2048
    lines = pytest_plugin.format_summary(rows)
    assert lines[0] == "FAIL t.py::test_a [Net, 3 runs, 2 failing] on cpu"
    assert lines[1] == "    worst error: missing_grad 'blocks.0.fc1.weight' in region 'blocks.0'"
    assert lines[2] == "    activation memory saved: 2.0 KiB of 8.0 KiB (25%); recompute overhead: 1.50x baseline time"
    assert pytest_plugin.format_bytes(3 * 1024 * 1024) == "3.0 MiB"


def test_profile_registration(monkeypatch: pytest.MonkeyPatch) -> None:
    hypothesis = pytest.importorskip("hypothesis")
    monkeypatch.setenv("CI", "true")
    pytest_plugin.register_ckpt_profile()
    profile = hypothesis.settings.get_profile("ckpt")
    assert profile.deadline is None and profile.derandomize is True
    assert hypothesis.HealthCheck.too_slow in profile.suppress_health_check
    monkeypatch.setenv("CI", "")
    pytest_plugin.register_ckpt_profile(max_examples=4)
    profile = hypothesis.settings.get_profile("ckpt")
    assert profile.derandomize is False and profile.max_examples == 4


def test_hypothesis_profile_option_loads_ckpt(pytester: pytest.Pytester) -> None:
    pytest.importorskip("hypothesis")
    pytester.makepyfile(
        """
        from hypothesis import settings

        def test_profile():
            assert settings.get_current_profile_name() == "ckpt"
            assert settings.default.deadline is None
            assert settings.default.max_examples == 6
        """
    )
    result = pytester.runpytest_subprocess("--hypothesis-profile=ckpt", "--ckpt-examples=6")
    result.assert_outcomes(passed=1)
    pytester.makeini("[pytest]\nckpt_examples = 6\n")  # the ini key sets it too
    pytester.runpytest_subprocess("--hypothesis-profile=ckpt").assert_outcomes(passed=1)


def test_profile_loadable_from_conftest_at_import(pytester: pytest.Pytester) -> None:
    """The ``hypothesis`` entry point registers the profile when hypothesis is imported."""
    probe = pytester.run(
        sys.executable, "-c",
        "import importlib.metadata as m; print(sorted(e.value for e in m.entry_points(group='hypothesis')))",
    )
    assert "runtime_checks.pytest_plugin:register_ckpt_profile" in probe.stdout.str(), (
        "the installed ckptlint metadata lacks the hypothesis entry point: pip install -e . --no-deps"
    )
    pytester.makeconftest("from hypothesis import settings\nsettings.load_profile('ckpt')\n")
    pytester.makepyfile(
        """
        from hypothesis import settings

        def test_profile():
            assert settings.default.deadline is None
        """
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


_ASSERT_NOT_IMPORTED = """
    import sys

    def test_plain_arithmetic():
        assert 1 + 1 == 2

    def test_nothing_heavy_was_imported(request):
        assert request.config.pluginmanager.get_plugin("ckptlint") is not None
        heavy = sorted(name for name in ("torch", "hypothesis", "numpy") if sys.modules.get(name) is not None)
        assert heavy == [], heavy
"""


def test_suite_without_plugin_use_imports_no_torch(pytester: pytest.Pytester) -> None:
    """A fresh interpreter: collecting and running a plugin-free suite imports no torch/hypothesis."""
    pytester.makepyfile(_ASSERT_NOT_IMPORTED)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


_BLOCK_TORCH = textwrap.dedent(
    """
    import importlib.abc
    import sys

    ABSENT = {"torch", "hypothesis", "numpy"}


    class Absent(importlib.abc.MetaPathFinder):
        \"\"\"`import torch` (hypothesis, numpy) fails as in an environment without them.\"\"\"

        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in ABSENT:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None


    sys.meta_path.insert(0, Absent())
    import pytest

    sys.exit(pytest.main(sys.argv[1:]))
    """
)


def test_suite_runs_normally_without_torch(pytester: pytest.Pytester) -> None:
    """Without torch (nor hypothesis, numpy) the plugin still loads; only a test that asks for it
    fails, naming the extra to install."""
    pytester.makepyfile(
        test_plain=_ASSERT_NOT_IMPORTED,
        test_uses_fixture="""
            def test_needs_torch(ckpt_verify):
                pass
        """,
    )
    launcher = pytester.makepyfile(launch_without_torch=_BLOCK_TORCH)
    # hypothesis' own pytest plugin would be absent too (it imports hypothesis at the summary)
    result = pytester.run(sys.executable, str(launcher), "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-q",
                          str(pytester.path / "test_plain.py"), str(pytester.path / "test_uses_fixture.py"))
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*pip install 'ckptlint[[]runtime[]]'*"])
    assert "Traceback" not in result.stdout.str()


def test_public_names_exist() -> None:
    from runtime_checks import _pytest_support

    for module in (pytest_plugin, _pytest_support):
        missing = [name for name in module.__all__ if not hasattr(module, name)]
        assert missing == [], (module.__name__, missing)
