"""Suite-wide test setup."""

from __future__ import annotations

import gc
import importlib.util
import os

import pytest


@pytest.fixture(autouse=True)
def _inner_pytest_asyncio_scope(request: pytest.FixtureRequest) -> None:
    """Sessions run through ``pytester`` get the pytest-asyncio setting pyproject.toml gives ours.

    pytest-asyncio (installed with pytest-lsp for tests/lsp) warns in every
    session whose ini lacks ``asyncio_default_fixture_loop_scope``; a pytester
    session has its own, empty ini. Pytester clears PYTEST_ADDOPTS when it is
    set up, so it is set afterwards.
    """
    if "pytester" not in request.fixturenames or importlib.util.find_spec("pytest_asyncio") is None:
        return
    request.getfixturevalue("pytester")
    mp = request.getfixturevalue("monkeypatch")
    extra = "-o asyncio_default_fixture_loop_scope=function"
    mp.setenv("PYTEST_ADDOPTS", f"{os.environ.get('PYTEST_ADDOPTS', '')} {extra}".strip())


def pytest_collection_finish(session: pytest.Session) -> None:
    """Move everything collection imported (torch, transformers, ...) out of the garbage collector's view.

    Collecting the runtime tests imports torch and transformers: some 400,000 objects that live
    until the end of the session. Every full collection walks them all, and the linter's tests
    allocate enough libcst nodes to trigger many: one small ``ckptlint check`` took 0.30 s beside
    transformers instead of 0.02 s. Frozen objects are never collected, nor scanned.
    """
    gc.collect()
    gc.freeze()
