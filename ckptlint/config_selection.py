"""Rule codes and selectors: which rules a run enables, and :class:`ConfigError`.

Rule selection follows ruff's model so that users meet no surprise: ``select``
replaces the enabled set, ``extend-select`` adds to it, ``ignore`` removes from
it, and when a code matches both a selector and an ignore entry the *more
specific* one wins (``select = ["CKP101"]`` with ``ignore = ["CKP1"]`` keeps
CKP101; a tie goes to ``ignore``). Configuration and command line are layers:
the command line is applied after the file, and a ``--select`` there starts
afresh exactly like ``select`` in the file.

:class:`ConfigError` lives here, beneath the rest of the configuration,
because a bad selector is the first place it is raised. Import these names
from :mod:`ckptlint.config`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Sequence

__all__ = ["ConfigError", "SelectionLayer", "code_matches", "enabled_codes", "known_codes", "validate_selectors"]

_RELEASED_CODES = (
    "CKP101 CKP102 CKP103 CKP104 CKP105 CKP106 CKP107 CKP201 CKP202 CKP203 CKP204 CKP205 "
    "CKP301 CKP302 CKP303 CKP304 CKP305 CKP401 CKP402"
).split()

_CODE_SHAPE = re.compile(r"^CKP[0-9]{0,3}$")


class ConfigError(Exception):
    """A user mistake in configuration or in a rule selector: one line, no traceback."""


@dataclass(frozen=True)
class SelectionLayer:
    """One layer of rule selectors (the config file, or the command line).

    ``select`` of ``None`` means "keep what earlier layers enabled".
    """

    select: tuple[str, ...] | None = None
    extend_select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()


@lru_cache(maxsize=1)
def known_codes() -> frozenset[str]:
    """Every rule code ckptlint can emit (rules registry plus the tool's own).

    Read from the rule modules' file names (``ckp101_inplace_method_on_input.py``)
    without importing them: importing the registry loads libcst and the whole
    analysis, which a cached run otherwise never needs (~0.4 s).
    """
    import importlib.util
    import pkgutil

    codes = {"CKP001", "CKP002"}
    spec = importlib.util.find_spec("ckptlint.rules")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for info in pkgutil.iter_modules(locations):
        match = re.match(r"^ckp(\d{3})_", info.name)
        if match:
            codes.add("CKP" + match.group(1))
    if len(codes) > 2:
        return frozenset(codes)
    try:
        from ckptlint.rules import ALL_RULES
    except ImportError:
        # Only a broken install lacks the registry; the released codes are a
        # public contract, so selectors can still be checked against them.
        return frozenset(codes | set(_RELEASED_CODES))
    for rule in ALL_RULES:
        code = getattr(rule, "CODE", None)
        if isinstance(code, str):
            codes.add(code)
    return frozenset(codes)


def _selector_specificity(selector: str, code: str) -> int:
    """How specifically ``selector`` names ``code`` (0: not at all)."""
    if selector == "ALL":
        return 1
    if code.startswith(selector):
        return len(selector) + 1
    return 0


def validate_selectors(selectors: Iterable[str], where: str) -> None:
    """Raise :class:`ConfigError` for a selector that names no known code."""
    codes = known_codes()
    for selector in selectors:
        if not isinstance(selector, str):
            raise ConfigError(f"{where}: rule selector {selector!r} is not a string")
        if selector == "ALL":
            continue
        if not _CODE_SHAPE.match(selector) or not any(c.startswith(selector) for c in codes):
            raise ConfigError(
                f"{where}: unknown rule selector {selector!r} "
                f"(expected a code such as 'CKP101', a prefix such as 'CKP1', or 'ALL')"
            )


def enabled_codes(layers: Sequence[SelectionLayer], codes: Iterable[str] | None = None) -> frozenset[str]:
    """Apply selection layers in order, ruff style (more specific selector wins)."""
    all_codes = sorted(codes if codes is not None else known_codes())
    # Default: every rule except the opt-in unused-suppression report, which
    # --report-unused-ignores switches on separately.
    current = {c for c in all_codes if c != "CKP002"}
    for layer in layers:
        nxt: set[str] = set()
        selectors = (layer.select or ()) + layer.extend_select
        for code in all_codes:
            sel = max((_selector_specificity(s, code) for s in selectors), default=0)
            ign = max((_selector_specificity(s, code) for s in layer.ignore), default=0)
            if sel or ign:
                on = sel > ign
            else:
                on = layer.select is None and code in current
            if on:
                nxt.add(code)
        current = nxt
    return frozenset(current)


def code_matches(code: str, selectors: Iterable[str]) -> bool:
    """True when any selector (code, prefix or ``ALL``) names ``code``."""
    return any(_selector_specificity(s, code) for s in selectors)
