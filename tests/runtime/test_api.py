"""Public surface: __all__ resolves, and importing the package (as the pytest plugin does) imports no torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("torch")

import runtime_checks  # noqa: E402


def test_all_names_resolve() -> None:
    for name in runtime_checks.__all__:
        assert getattr(runtime_checks, name) is not None, name
    assert sorted(runtime_checks.__all__) == sorted(set(runtime_checks.__all__))


def test_verify_stays_the_function_after_submodule_import() -> None:
    import runtime_checks.assertions  # noqa: F401  (imports the runtime_checks.verify module)

    assert callable(runtime_checks.verify) and runtime_checks.verify.__name__ == "verify"
    from runtime_checks import verify

    assert verify is runtime_checks.verify


def test_package_import_is_light() -> None:
    code = "import sys, runtime_checks, runtime_checks.pytest_plugin; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
