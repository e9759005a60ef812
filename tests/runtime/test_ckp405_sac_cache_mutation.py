"""Ground truth for CKP405 (fixtures ``sac_cache_mutation.py`` and ``benign_sac_cache_mutation.py``).

Under ``allow_cache_entry_mutation=True`` an in-place op on a ``MUST_SAVE`` output mutates the cache the
recompute reads: the verifier sees different gradients from the plain run. Without in-place ops, or with an
idempotent one (``relu_``), the run is equivalent; without the flag torch raises instead of going silent.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

torch = pytest.importorskip("torch")
checkpoint_mod = pytest.importorskip("torch.utils.checkpoint")
if not hasattr(checkpoint_mod, "create_selective_checkpoint_contexts"):
    pytest.skip("selective checkpointing needs torch >= 2.4", allow_module_level=True)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"ckptlint_fixture_{name}", FIXTURES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mutation_allowed_gives_wrong_gradients() -> None:
    from runtime_checks import verify

    module = _load("sac_cache_mutation")
    torch.manual_seed(0)
    report = verify(lambda: module.Model(8), torch.randn(4, 8), localize=False)
    assert not report.equivalent, str(report)


def test_allowed_without_harmful_mutation_is_equivalent() -> None:
    from runtime_checks import verify

    module = _load("benign_sac_cache_mutation")
    torch.manual_seed(0)
    report = verify(lambda: module.Model(8), torch.randn(4, 8), localize=False)
    assert report.equivalent and not report.notes, str(report)


def test_mutation_without_the_flag_raises() -> None:
    module = _load("benign_sac_cache_mutation")
    torch.manual_seed(0)
    x = torch.randn(4, 8, requires_grad=True)
    with pytest.raises(RuntimeError, match="mutated"):
        module.StrictModel(8)(x).sum().backward()
