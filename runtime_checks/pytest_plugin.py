"""pytest plugin: gradient-checkpoint equivalence tests inside an ordinary test suite.

Registered through the ``pytest11`` entry point, so it is loaded by every pytest
run in an environment where ckptlint is installed -- including suites that never
touch checkpointing and environments without torch. This module therefore holds
hooks only (and the hypothesis entry point): it imports neither torch nor hypothesis.
Options live in :mod:`runtime_checks._pytest_options` and the per-test bookkeeping and
summary in :mod:`runtime_checks._pytest_summary` (both light, re-exported here);
everything heavy lives in :mod:`runtime_checks._pytest_support`, imported the first
time a test actually asks for the ``ckpt_verify`` fixture or carries the
``ckpt_equivalence`` marker.

What it provides:

* the ``ckpt_verify`` fixture: ``verify``'s signature, preconfigured from the
  options, raising ``AssertionError`` with the report table on a mismatch;
* the ``@pytest.mark.ckpt_equivalence(...)`` marker, whose test may also
  *return* (or *yield*) the model or ``(model, inputs)`` to verify;
* ``--ckpt-*`` options with ini equivalents (precedence marker > CLI > ini);
* the ``ckpt`` hypothesis settings profile (:func:`register_ckpt_profile`);
* a terminal summary of every verified model.
"""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import pytest

from runtime_checks._pytest_options import (  # noqa: F401  (importable from here, as before)
    CKPT_PROFILE,
    DEFAULT_EXAMPLES,
    MARKER,
    MARKER_KEYWORDS,
    CkptOptions,
    OptionError,
    _OPTIONS,
    _Option,
    _options_key,
    in_ci,
    item_options,
    marker_kwargs,
    options_for_item,
    options_from_config,
)
from runtime_checks._pytest_summary import (  # noqa: F401  (importable from here, as before)
    USER_PROPERTY,
    _aggregate,
    _current_item_key,
    _item_entries_key,
    current_item,
    format_bytes,
    format_summary,
    record,
)

if TYPE_CHECKING:  # only for annotations; never imported at run time here
    from runtime_checks._pytest_support import CkptVerify

__all__ = [
    "CKPT_PROFILE",
    "MARKER",
    "MARKER_KEYWORDS",
    "CkptOptions",
    "OptionError",
    "register_ckpt_profile",
]


# ---------------------------------------------------------------------------------------------
# hypothesis profile (the ``hypothesis`` entry point names this function)
# ---------------------------------------------------------------------------------------------


def register_ckpt_profile(max_examples: int | None = None) -> None:
    """Register the ``ckpt`` hypothesis settings profile.

    Deadline off and the ``too_slow`` health check suppressed (a verification runs the
    model several times, forward and backward), derandomized when the ``CI`` environment
    variable is set so CI runs are reproducible. Load it with ``--hypothesis-profile=ckpt``
    or ``hypothesis.settings.load_profile("ckpt")`` in ``conftest.py``.

    Called by the plugin when hypothesis is (or gets) imported, so users need not call it.
    """
    from hypothesis import (  # imported only when hypothesis is in use
        HealthCheck,
        settings,
    )

    kwargs: dict[str, Any] = {
        "deadline": None,
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
        "derandomize": in_ci(),
        "print_blob": True,
    }
    if max_examples is not None:
        kwargs["max_examples"] = max_examples
    settings.register_profile(CKPT_PROFILE, **kwargs)


# ---------------------------------------------------------------------------------------------
# hooks
# ---------------------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ckptlint", "gradient-checkpoint equivalence (ckptlint)")
    for option in _OPTIONS:
        if option.is_flag:
            group.addoption(option.flag, action="store_true", default=False, dest=option.ini, help=option.help)
        else:
            group.addoption(option.flag, action="store", default=None, dest=option.ini,
                            metavar=option.metavar, help=option.help)
        _addini(parser, option)


def _addini(parser: pytest.Parser, option: _Option) -> None:
    # Unset keys read as None (not 0 / False), so that an ini value never hides the default.
    try:
        parser.addini(option.ini, option.help, type=option.ini_type, default=None)  # type: ignore[arg-type]
    except ValueError:  # pytest < 8.4 has no "int"/"float" ini types: parsed from the string
        parser.addini(option.ini, option.help, type="string", default="")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(model=..., inputs=..., checkpoint=..., examples=..., device=..., rtol=..., atol=...): "
        "verify that the checkpointed model's outputs, gradients and buffers equal the un-checkpointed "
        "baseline; the test may instead return the model or (model, inputs)",
    )
    try:
        config.stash[_options_key] = options_from_config(config)
    except OptionError as error:
        raise pytest.UsageError(str(error)) from None
    config.pluginmanager.register(_Summary(), "ckptlint-summary")
    config.stash[_current_item_key] = None
    # The hypothesis plugin loads --hypothesis-profile in its own pytest_configure, which runs
    # after this one (tryfirst): register the profile first when it is the one asked for, or
    # when hypothesis is already imported (the hypothesis entry point usually did it already).
    wants_profile = _getoption(config, "hypothesis_profile") == CKPT_PROFILE
    if wants_profile or sys.modules.get("hypothesis") is not None:
        examples_set = _getoption(config, "ckpt_examples") is not None or config.getini("ckpt_examples") not in ("", None)
        register_ckpt_profile(config.stash[_options_key].examples if examples_set else None)


def _getoption(config: pytest.Config, name: str) -> Any:
    try:
        return config.getoption(name)
    except ValueError:  # the option belongs to a plugin that is not loaded
        return None


def _uses_plugin(item: pytest.Item) -> bool:
    return "ckpt_verify" in getattr(item, "fixturenames", ()) or item.get_closest_marker(MARKER) is not None


def pytest_runtest_setup(item: pytest.Item) -> None:
    if not _uses_plugin(item):
        return
    try:
        options = options_for_item(item.config.stash[_options_key], marker_kwargs(item))
    except OptionError as error:
        message = str(error)
    else:
        message = None
    if message is not None:  # outside the except block: reported once, without a chained copy
        pytest.fail(message, pytrace=False)
    if options.device.startswith("cuda"):
        from runtime_checks import _pytest_support

        _pytest_support.require_device(options)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    if not _uses_plugin(item):
        return (yield)
    item.config.stash[_current_item_key] = item
    item.stash[_item_entries_key] = []
    try:
        return (yield)
    finally:
        item.config.stash[_current_item_key] = None
        for entry in _aggregate(item.nodeid, item.stash[_item_entries_key]):
            item.user_properties.append((USER_PROPERTY, json.dumps(entry, sort_keys=True)))


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Module | pytest.Class, name: str, obj: object) -> list[pytest.Item] | None:
    """Collect ``ckpt_equivalence``-marked generator functions, which yield what to verify.

    pytest refuses generator test functions; for a marked one, each yielded model or
    ``(model, inputs)`` is verified in turn. Built with the collector's own function
    generation so that parametrize and fixtures work as for any test.
    """
    if not inspect.isgeneratorfunction(obj) or not collector.istestfunction(obj, name):
        return None
    marked = any(mark.name == MARKER for mark in getattr(obj, "pytestmark", ()))
    if not marked and collector.get_closest_marker(MARKER) is None:
        return None
    genfunctions = getattr(collector, "_genfunctions", None)
    if genfunctions is None:  # pragma: no cover - a pytest without it; pytest's own error follows
        return None
    return list(genfunctions(name, obj))


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> object | None:
    kwargs = _marker_kwargs_or_none(pyfuncitem)
    if kwargs is None:
        return None
    from runtime_checks import _pytest_support

    _pytest_support.run_marked_test(pyfuncitem, kwargs, item_options(pyfuncitem))
    return True


def _marker_kwargs_or_none(item: pytest.Item) -> dict[str, Any] | None:
    try:
        return marker_kwargs(item)
    except OptionError as error:  # already reported by setup; keep the message if setup was bypassed
        message = str(error)
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def ckpt_verify(pytestconfig: pytest.Config) -> CkptVerify:
    """``verify`` preconfigured from the ``--ckpt-*`` options (and the test's marker).

    ``ckpt_verify(model, inputs, **verify_kwargs)`` returns the report when the checkpointed
    model is equivalent to its un-checkpointed baseline and raises ``AssertionError`` with the
    report table otherwise. ``ckpt_verify.check(model, strategy)`` draws the inputs with
    hypothesis (``--ckpt-examples`` examples) and shrinks a failure to a minimal input.
    Session-scoped so that it can be used inside ``@given`` tests.
    """
    from runtime_checks._pytest_support import CkptVerify

    return CkptVerify(pytestconfig)


class _Summary:
    """Per-session collector of verification results, registered in ``pytest_configure``.

    Results arrive through each call report's ``user_properties``, so rows from
    pytest-xdist workers reach the controller like local ones.
    """

    def __init__(self) -> None:
        self.results: list[dict[str, Any]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call":
            self.results.extend(
                json.loads(value) for name, value in report.user_properties if name == USER_PROPERTY
            )

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.results:
            return
        terminalreporter.write_sep("=", "ckptlint: gradient-checkpoint equivalence")
        for line in format_summary(self.results):
            terminalreporter.write_line(line)
