"""Shared pieces for the pytest-plugin tests: tiny models written into each pytester directory."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

#: Written as ``models.py`` next to the inner test files. The models are tiny (a few
#: hundred parameters) so each verification takes milliseconds on CPU.
MODELS_FILE = Path(__file__).with_name("ckpt_models.py")


@pytest.fixture
def models(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester directory holding ``models.py``."""
    pytester.makepyfile(models=MODELS_FILE.read_text())
    return pytester


@pytest.fixture(scope="session", autouse=True)
def warm_verifier() -> None:
    """Run the verifier once in this (outer) process before any in-process pytester session.

    Autouse: any in-process session (``--help`` in test_options.py too) may be the first to
    import torch's lazily loaded parts, so this must run before every test of this folder.

    pytester restores ``sys.modules`` after each in-process run, dropping the modules that
    run imported lazily; torch registers native operator libraries when some of its
    submodules (``torch._dynamo``, ``torch._inductor``) are imported, and a second import
    after such a restore fails. Importing them here, outside any inner session, keeps
    them loaded for good.
    """
    pytest.importorskip("torch")
    import torch._dynamo  # imported lazily by checkpoint's non-reentrant path
    from hypothesis import given, settings

    from runtime_checks import strategies
    from runtime_checks.verify import verify

    spec = importlib.util.spec_from_file_location("ckpt_models_warmup", MODELS_FILE)
    assert spec is not None and spec.loader is not None
    models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(models)
    verify(models.clean(), torch.randn(2, 8))
    verify(models.hazardous(), torch.randn(2, 8))

    @settings(max_examples=2, database=None, deadline=None)
    @given(strategies.tensors(shape=("B", 8)))
    def draw(x: object) -> None:
        verify(models.clean(), x)

    draw()
