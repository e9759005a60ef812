"""The plugin's settings: ``--ckpt-*`` options, their ini keys, marker keywords, precedence.

Marker > CLI > ini > default, resolved into a frozen :class:`CkptOptions`;
a bad value raises :class:`OptionError` naming where it came from; also
:func:`in_ci`. Light: imports pytest (and, to validate ``--ckpt-min-saved`` /
``--ckpt-max-overhead``, :mod:`runtime_checks.thresholds`), never torch or
hypothesis. Re-exported by :mod:`runtime_checks.pytest_plugin`, whose hooks use it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import pytest

__all__ = [
    "CKPT_PROFILE",
    "DEFAULT_EXAMPLES",
    "MARKER",
    "MARKER_KEYWORDS",
    "CkptOptions",
    "OptionError",
    "in_ci",
    "item_options",
    "marker_kwargs",
    "options_for_item",
    "options_from_config",
]

MARKER = "ckpt_equivalence"
CKPT_PROFILE = "ckpt"

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


def in_ci() -> bool:
    """Whether the ``CI`` environment variable is set (as GitHub Actions, GitLab CI and others do)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


_options_key = pytest.StashKey[CkptOptions]()


def item_options(item: pytest.Item) -> CkptOptions:
    """Session options with the item's marker keywords applied."""
    try:
        return options_for_item(item.config.stash[_options_key], marker_kwargs(item))
    except OptionError as error:
        message = str(error)
    pytest.fail(message, pytrace=False)
