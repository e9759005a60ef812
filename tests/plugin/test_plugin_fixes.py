"""Plugin defects: localise once after shrinking, typed ini options, one report per bad keyword."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("runtime_checks.verify")

from tests.plugin.test_verification import _run  # noqa: E402

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.usefixtures("warm_verifier")

COUNTING_CONFTEST = """
import sys
import pytest

CALLS = []

@pytest.fixture(autouse=True)
def count_verify(monkeypatch):
    module = sys.modules["runtime_checks.verify"]
    real = module.verify

    def counting(*args, **kwargs):
        CALLS.append(kwargs.get("localize", True))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "verify", counting)
    yield
    print(f"\\nVERIFY CALLS: {len(CALLS)} LOCALISED: {sum(CALLS)}")
"""


def test_hypothesis_marker_localises_once_on_the_shrunk_example(models: pytest.Pytester) -> None:
    models.makeconftest(COUNTING_CONFTEST)
    models.makepyfile(
        """
        import pytest
        from runtime_checks.strategies import tensors
        from models import hazardous

        @pytest.mark.ckpt_equivalence(inputs=tensors(shape=("B", 8), dims={"B": (1, 5)}), examples=5)
        def test_hazard():
            return hazardous()
        """
    )
    result = _run(models, "-s", "--hypothesis-seed=1")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    line = next(ln for ln in out.splitlines() if ln.startswith("VERIFY CALLS:"))
    calls, localised = (int(w) for w in line.split()[2::2])
    assert localised == 1 and calls > 1, line
    assert "inputs: arg0: float32[1, 8]" in out  # the shrunk example, reported with its region
    assert "region" in out


def test_ini_options_are_typed(models: pytest.Pytester) -> None:
    models.makeini("[pytest]\nckpt_no_localize = true\nckpt_examples = 3\nckpt_require_device = false\n")
    models.makepyfile(
        """
        def test_types(pytestconfig):
            assert pytestconfig.getini("ckpt_no_localize") is True
            assert pytestconfig.getini("ckpt_require_device") is False
            assert pytestconfig.getini("ckpt_examples") == 3
        """
    )
    _run(models).assert_outcomes(passed=1)
    models.makeini("[pytest]\nckpt_examples = many\n")
    result = _run(models)
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*ckpt_examples*many*"])


def test_unknown_marker_keyword_is_reported_once(models: pytest.Pytester) -> None:
    models.makepyfile(
        """
        import pytest
        import torch
        from models import Net

        @pytest.mark.ckpt_equivalence(inputs=torch.randn(2, 8), exmaples=3)
        def test_typo():
            return Net()
        """
    )
    result = _run(models)
    result.assert_outcomes(errors=1)  # a usage error of the test, at setup
    out = result.stdout.str()
    # The error section holds the message once; the short summary repeats it (whole under CI=true,
    # where pytest does not shorten it), so count only above the summary.
    errors = out.split("short test summary info")[0]
    assert errors.count("unknown keyword 'exmaples'") == 1, out
    assert "During handling" not in out

