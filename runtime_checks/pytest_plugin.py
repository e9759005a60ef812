"""pytest plugin: gradient-checkpoint equivalence tests inside an ordinary test suite.

Registered through the ``pytest11`` entry point, so it is loaded by every pytest
run in an environment where ckptlint is installed -- including suites that never
touch checkpointing and environments without torch. This module therefore holds
hooks, options and bookkeeping only: it imports neither torch nor hypothesis.
Everything heavy lives in :mod:`runtime_checks._pytest_support`, imported the
first time a test actually asks for the ``ckpt_verify`` fixture or carries the
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
import math
import os
import sys
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import pytest

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

MARKER = "ckpt_equivalence"
CKPT_PROFILE = "ckpt"
#: Name under which each verification is stored in ``item.user_properties``; it travels with
#: the test report (also across pytest-xdist workers) and lands in junit XML as a property.
USER_PROPERTY = "ckptlint"

#: Keywords ``@pytest.mark.ckpt_equivalence`` accepts: what to verify, then the settings that
#: override the ``--ckpt-*`` options, then keywords passed to ``verify`` unchanged.
MARKER_KEYWORDS: tuple[str, ...] = (
    "model",
    "inputs",
    "examples",
    "device",
    "rtol",
    "atol",
    "localize",
    "checkpoint",
    "checkpoint_kwargs",
    "loss_fn",
    "dtype",
    "seed",
    "allow_no_checkpoint",
    "autocast",
    # torch.distributed (docs/distributed.md): world_size switches it on.
    "world_size",
    "wrap",
    "backend",
    "wrap_kwargs",
    "timeout",
    "min_saved",
    "max_overhead",
)

_DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


class OptionError(ValueError):
    """A ckptlint option, ini key or marker keyword has a value it cannot use."""


# ---------------------------------------------------------------------------------------------
# options
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Option:
    """One setting, exposed both as a command-line option and as an ini key."""

    flag: str  # --ckpt-examples
    ini: str  # ckpt_examples
    help: str
    is_flag: bool = False
    metavar: str | None = None
    # The ini key's type for ``parser.addini`` (flags are "bool"); pytest converts and
    # validates it, a bad value is reported naming the key.
    ini_type: str = "string"


_OPTIONS: tuple[_Option, ...] = (
    _Option(
        "--ckpt-device",
        "ckpt_device",
        "device for checkpoint-equivalence tests: auto (CUDA when available), cpu, cuda, cuda:N "
        "(default: auto)",
        metavar="DEVICE",
    ),
    _Option(
        "--ckpt-examples",
        "ckpt_examples",
        "hypothesis examples per checkpoint-equivalence test whose inputs are a strategy (default: 10)",
        metavar="N",
        ini_type="int",
    ),
    _Option(
        "--ckpt-rtol",
        "ckpt_rtol",
        "relative tolerance for checkpoint-equivalence comparisons (default: dtype-aware, "
        "as torch.testing.assert_close, widened by the model's own noise)",
        metavar="RTOL",
        ini_type="float",
    ),
    _Option(
        "--ckpt-atol",
        "ckpt_atol",
        "absolute tolerance for checkpoint-equivalence comparisons (default: dtype-aware)",
        metavar="ATOL",
        ini_type="float",
    ),
    _Option(
        "--ckpt-no-localize",
        "ckpt_no_localize",
        "do not bisect over checkpoint regions to name the one that breaks equivalence (faster)",
        is_flag=True,
        ini_type="bool",
    ),
    _Option(
        "--ckpt-min-saved",
        "ckpt_min_saved",
        "fail a checkpoint-equivalence test whose checkpointing frees less than this share of the bytes "
        "saved for backward (40%%) or this size (64MiB)",
        metavar="SHARE",
    ),
    _Option(
        "--ckpt-max-overhead",
        "ckpt_max_overhead",
        "fail a checkpoint-equivalence test whose checkpointed step takes more than this ratio of the "
        "bypassed step (e.g. 1.6)",
        metavar="RATIO",
    ),
    _Option(
        "--ckpt-require-device",
        "ckpt_require_device",
        "fail (instead of skip) checkpoint-equivalence tests whose device is not available",
        is_flag=True,
        ini_type="bool",
    ),
)

DEFAULT_EXAMPLES = 10


@dataclass(frozen=True)
class CkptOptions:
    """Resolved settings for one verification (marker > CLI > ini > default)."""

    device: str = "auto"
    examples: int = DEFAULT_EXAMPLES
    rtol: float | None = None
    atol: float | None = None
    localize: bool = True
    require_device: bool = False


def _parse_device(value: object, where: str) -> str:
    text = str(value).strip()
    if text in ("auto", "cpu", "cuda"):
        return text
    if text.startswith("cuda:") and text[5:].isdigit():
        return text
    raise OptionError(f"{where}: invalid device {value!r} (expected {_DEVICE_CHOICES})")


def _parse_examples(value: object, where: str) -> int:
    if isinstance(value, bool):  # bool is an int subclass; True examples is a mistake
        raise OptionError(f"{where}: invalid number of examples {value!r} (expected a positive integer)")
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        number = 0
    if number < 1:
        raise OptionError(f"{where}: invalid number of examples {value!r} (expected a positive integer)")
    return number


def _parse_tolerance(value: object, where: str) -> float:
    if isinstance(value, bool):
        raise OptionError(f"{where}: invalid tolerance {value!r} (expected a non-negative number)")
    try:
        number = float(str(value).strip()) if not isinstance(value, (int, float)) else float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise OptionError(f"{where}: invalid tolerance {value!r} (expected a non-negative number)")
    return number


def _parse_bool(value: object, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise OptionError(f"{where}: invalid boolean {value!r} (expected true or false)")


def _thresholds_parser(name: str) -> Callable[[object, str], Any]:
    """Validate --ckpt-min-saved / --ckpt-max-overhead at startup (read per test by runtime_checks.thresholds)."""

    def parse(value: object, where: str) -> Any:
        from runtime_checks import thresholds

        return getattr(thresholds, name)(value, where)

    return parse


def _ini_where(config: pytest.Config, key: str) -> str:
    inipath = getattr(config, "inipath", None)
    name = inipath.name if inipath is not None else "ini file"
    if name == "pyproject.toml":
        return f"pyproject.toml [tool.pytest.ini_options] {key}"
    return f"{name} {key}"


def options_from_config(config: pytest.Config) -> CkptOptions:
    """Read ini keys, then command-line options over them; raise :class:`OptionError` on bad values."""
    parsers: dict[str, Callable[[object, str], Any]] = {
        "ckpt_device": _parse_device,
        "ckpt_examples": _parse_examples,
        "ckpt_rtol": _parse_tolerance,
        "ckpt_atol": _parse_tolerance,
        "ckpt_no_localize": _parse_bool,
        "ckpt_require_device": _parse_bool,
        "ckpt_min_saved": _thresholds_parser("parse_min_saved"),
        "ckpt_max_overhead": _thresholds_parser("parse_max_overhead"),
    }
    values: dict[str, Any] = {}
    for option in _OPTIONS:
        parse = parsers[option.ini]
        try:
            raw_ini = config.getini(option.ini)
        except (ValueError, TypeError, pytest.UsageError) as error:  # pytest converts typed keys itself
            raise OptionError(f"{_ini_where(config, option.ini)}: invalid value ({error})") from None
        if raw_ini not in ("", None, []):
            values[option.ini] = parse(raw_ini, _ini_where(config, option.ini))
        raw_cli = config.getoption(option.ini)
        if option.is_flag:
            if raw_cli:
                values[option.ini] = True
        elif raw_cli is not None:
            values[option.ini] = parse(raw_cli, option.flag)
    options = CkptOptions()
    return replace(
        options,
        device=values.get("ckpt_device", options.device),
        examples=values.get("ckpt_examples", options.examples),
        rtol=values.get("ckpt_rtol", options.rtol),
        atol=values.get("ckpt_atol", options.atol),
        localize=not values.get("ckpt_no_localize", not options.localize),
        require_device=values.get("ckpt_require_device", options.require_device),
    )


def marker_kwargs(item: pytest.Item) -> dict[str, Any] | None:
    """The validated keywords of the item's ``ckpt_equivalence`` marker, or None when unmarked.

    Several markers (class- and function-level) merge, the closest winning.
    """
    markers = list(item.iter_markers(MARKER))
    if not markers:
        return None
    merged: dict[str, Any] = {}
    for mark in reversed(markers):  # iter_markers yields the closest first
        if mark.args:
            raise OptionError(
                f"@pytest.mark.{MARKER} takes keyword arguments only, got positional {mark.args[0]!r}"
            )
        for key in mark.kwargs:
            if key not in MARKER_KEYWORDS:
                raise OptionError(
                    f"@pytest.mark.{MARKER}: unknown keyword {key!r} "
                    f"(expected one of: {', '.join(MARKER_KEYWORDS)})"
                )
        merged.update(mark.kwargs)
    return merged


def options_for_item(base: CkptOptions, kwargs: Mapping[str, Any] | None) -> CkptOptions:
    """Apply marker keywords over the session options (marker > CLI > ini)."""
    if not kwargs:
        return base
    where = f"@pytest.mark.{MARKER}"
    options = base
    if kwargs.get("device") is not None:
        options = replace(options, device=_parse_device(kwargs["device"], f"{where}(device=...)"))
    if kwargs.get("examples") is not None:
        options = replace(options, examples=_parse_examples(kwargs["examples"], f"{where}(examples=...)"))
    if kwargs.get("rtol") is not None:
        options = replace(options, rtol=_parse_tolerance(kwargs["rtol"], f"{where}(rtol=...)"))
    if kwargs.get("atol") is not None:
        options = replace(options, atol=_parse_tolerance(kwargs["atol"], f"{where}(atol=...)"))
    if kwargs.get("localize") is not None:
        options = replace(options, localize=_parse_bool(kwargs["localize"], f"{where}(localize=...)"))
    return options


# ---------------------------------------------------------------------------------------------
# hypothesis profile
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


def in_ci() -> bool:
    """Whether the ``CI`` environment variable is set (as GitHub Actions, GitLab CI and others do)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


# ---------------------------------------------------------------------------------------------
# hooks
# ---------------------------------------------------------------------------------------------

_options_key = pytest.StashKey[CkptOptions]()
_item_entries_key = pytest.StashKey[list]()  # list[dict]: raw entries of the running item
_current_item_key = pytest.StashKey["pytest.Item | None"]()


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


def item_options(item: pytest.Item) -> CkptOptions:
    """Session options with the item's marker keywords applied."""
    try:
        return options_for_item(item.config.stash[_options_key], marker_kwargs(item))
    except OptionError as error:
        message = str(error)
    pytest.fail(message, pytrace=False)


def current_item(config: pytest.Config) -> pytest.Item | None:
    """The test item whose call phase is running (the fixture attributes its results to it)."""
    return config.stash.get(_current_item_key, None)


def record(item: pytest.Item | None, entry: dict[str, Any]) -> None:
    """Remember one verification of ``item`` for the terminal summary."""
    if item is None:
        return
    item.stash.setdefault(_item_entries_key, []).append(entry)


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


def _aggregate(nodeid: str, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One summary row per (test, model): hypothesis tests verify many times."""
    grouped: dict[str, dict[str, Any]] = {}
    ratios: dict[str, list[float]] = {}
    for entry in entries:
        row = grouped.get(entry["model"])
        if row is None:
            row = grouped[entry["model"]] = dict(entry, nodeid=nodeid, runs=0, failures=0)
            ratios[entry["model"]] = []
        row["runs"] += 1
        if not entry["equivalent"] or entry.get("thresholds"):
            row["failures"] += 1
        if not entry["equivalent"]:
            row["equivalent"] = False
        if entry.get("thresholds"):
            row["thresholds"] = entry["thresholds"]
        for key in ("worst", "worst_parameter"):
            if _worse(entry.get(key), row.get(key)):
                row[key] = entry[key]
        for key in ("saved_bytes", "baseline_bytes", "checkpointed_bytes"):
            if entry.get(key) is not None and (row.get(key) is None or entry[key] > row[key]):
                row[key] = entry[key]
        if entry.get("ratio") is not None:
            ratios[entry["model"]].append(entry["ratio"])
    for model, row in grouped.items():
        ordered = sorted(ratios[model])
        row["ratio"] = ordered[len(ordered) // 2] if ordered else None  # median over examples
    return list(grouped.values())


def _worse(new: dict[str, Any] | None, old: dict[str, Any] | None) -> bool:
    """Is mismatch ``new`` worse than ``old``? Errors and missing grads outrank any number."""
    if new is None:
        return False
    if old is None:
        return True
    new_abs, old_abs = new.get("abs"), old.get("abs")
    if new_abs is None:
        return old_abs is not None
    return old_abs is not None and new_abs > old_abs


def format_summary(results: list[dict[str, Any]]) -> list[str]:
    """Lines of the terminal summary: verdict, test, model, worst error, memory saved, overhead."""
    lines = []
    for row in results:
        verdict = "PASS" if row["equivalent"] and not row.get("thresholds") else "FAIL"
        several = row.get("runs", 1) > 1
        runs = f", {row['runs']} runs" if several else ""
        failures = f", {row['failures']} failing" if several and row.get("failures") else ""
        head = f"{verdict} {row['nodeid']} [{row['model']}{runs}{failures}] on {row.get('device', '?')}"
        lines.append(head)
        worst, parameter = row.get("worst"), row.get("worst_parameter")
        text = "worst error: " + (_format_mismatch(worst) if worst else "none")
        if parameter and parameter != worst:
            text += f"; worst parameter: {_format_mismatch(parameter)}"
        lines.append(f"    {text}")
        lines.append(f"    {_format_memory(row)}; {_format_ratio(row.get('ratio'))}")
        for missed in row.get("thresholds") or ():
            lines.append(f"    threshold missed: {missed}")
    return lines


def _format_mismatch(mismatch: Mapping[str, Any]) -> str:
    where = f" in region {mismatch['region']!r}" if mismatch.get("region") else ""
    return f"{mismatch['kind']} {mismatch['name']!r}{where}{_format_err(mismatch.get('abs'), mismatch.get('rel'))}"


def _format_err(abs_err: float | None, rel_err: float | None) -> str:
    if abs_err is None or not math.isfinite(abs_err):
        return ""
    text = f": abs {abs_err:.3g}"
    if rel_err is not None and math.isfinite(rel_err):
        text += f", rel {rel_err:.3g}"
    return text


def format_bytes(count: float) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover - loop always returns


def _format_memory(row: Mapping[str, Any]) -> str:
    saved, baseline = row.get("saved_bytes"), row.get("baseline_bytes")
    if saved is None:
        return "activation memory saved: unknown"
    if saved <= 0:  # tiny models: the inputs and RNG states checkpoint keeps outweigh what it frees
        kept = row.get("checkpointed_bytes")
        detail = f" (checkpointing keeps {format_bytes(kept)}, frees {format_bytes(baseline or 0)})" if kept is not None else ""
        return f"activation memory saved: none{detail}"
    if baseline:
        return f"activation memory saved: {format_bytes(saved)} of {format_bytes(baseline)} ({saved / baseline:.0%})"
    return f"activation memory saved: {format_bytes(saved)}"


def _format_ratio(ratio: float | None) -> str:
    if ratio is None or not math.isfinite(ratio):
        return "recompute overhead: unknown"
    return f"recompute overhead: {ratio:.2f}x baseline time"
