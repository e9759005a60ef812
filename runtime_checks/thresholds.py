"""Efficiency thresholds a team holds in CI: ``min_saved`` and ``max_overhead``.

``@pytest.mark.ckpt_equivalence(min_saved="40%", max_overhead=1.6)``, or
``--ckpt-min-saved`` / ``--ckpt-max-overhead`` (ini ``ckpt_min_saved`` /
``ckpt_max_overhead``); the marker wins over the command line, the command
line over the ini file. ``min_saved``: the share (``"40%"``) of the bytes
saved for backward that checkpointing must free, or an absolute size
(``"64MiB"``). ``max_overhead``: the most a checkpointed step may take
relative to the same step with checkpointing bypassed, timed as the fastest
of three steps each way, interleaved (verify's own single-step timing is too
rough to hold a limit against); those six steps run only where the limit is set.

Imports no torch until a check has to re-time a step.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["Thresholds", "failure_text", "parse_max_overhead", "parse_min_saved", "problems", "thresholds_for"]

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


@dataclass(frozen=True)
class Thresholds:
    """``min_saved``: ``("share", 0.4)`` or ``("bytes", n)``; ``max_overhead``: a ratio; either may be None."""

    min_saved: tuple[str, float] | None = None
    min_saved_text: str = ""
    min_saved_where: str = ""
    max_overhead: float | None = None
    max_overhead_where: str = ""


def parse_min_saved(value: object, where: str) -> tuple[str, float]:
    """``"40%"`` -> ("share", 0.4); ``"64MiB"`` or an int -> ("bytes", n). Raises ValueError naming ``where``."""
    from runtime_checks._pytest_options import OptionError

    text = str(value).strip()
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*%", text)
    if m and not isinstance(value, bool) and float(m.group(1)) <= 100:
        return ("share", float(m.group(1)) / 100)
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)", text)
    if m and not isinstance(value, bool) and m.group(2).lower() in _UNITS:
        return ("bytes", float(m.group(1)) * _UNITS[m.group(2).lower()])
    raise OptionError(f"{where}: invalid min_saved {value!r} (expected a share such as 40% or a size such as 64MiB)")


def parse_max_overhead(value: object, where: str) -> float:
    """A ratio >= 1 (``1.6``: a checkpointed step may take 1.6x the bypassed one)."""
    from runtime_checks._pytest_options import OptionError

    try:
        number = math.nan if isinstance(value, bool) else float(str(value).strip().rstrip("xX"))
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 1:
        raise OptionError(f"{where}: invalid max_overhead {value!r} (expected a ratio >= 1, e.g. 1.6)")
    return number


def thresholds_for(item: Any) -> Thresholds:
    """Marker > CLI > ini, for one test item (``None`` item: none set)."""
    if item is None:
        return Thresholds()
    from runtime_checks._pytest_options import MARKER, _ini_where

    config = item.config
    found: dict[str, tuple[object, str]] = {}
    for key, flag in (("min_saved", "--ckpt-min-saved"), ("max_overhead", "--ckpt-max-overhead")):
        ini = config.getini(f"ckpt_{key}")
        if ini not in ("", None, []):
            found[key] = (ini, _ini_where(config, f"ckpt_{key}"))
        cli = config.getoption(f"ckpt_{key}")
        if cli is not None:
            found[key] = (cli, flag)
        for mark in item.iter_markers(MARKER):  # closest first
            if mark.kwargs.get(key) is not None:
                found[key] = (mark.kwargs[key], f"@pytest.mark.{MARKER}({key}=...)")
                break
    out = Thresholds()
    if "min_saved" in found:
        value, where = found["min_saved"]
        out = Thresholds(parse_min_saved(value, where), str(value), where)
    if "max_overhead" in found:
        value, where = found["max_overhead"]
        out = Thresholds(out.min_saved, out.min_saved_text, out.min_saved_where, parse_max_overhead(value, where), where)
    return out


def failure_text(missed: list[str]) -> str:
    """The test's failure message for the thresholds ``problems`` found missed."""
    return "ckpt_equivalence thresholds: " + "; ".join(missed)


def problems(item: Any, report: Any, model: Any, inputs: Any) -> list[str]:
    """The thresholds ``report`` misses, each with the measured numbers (empty: all met)."""
    __tracebackhide__ = True
    from runtime_checks._pytest_options import OptionError

    try:
        limits = thresholds_for(item)
    except OptionError as error:
        import pytest

        pytest.fail(str(error), pytrace=False)
    problems = []
    mem = report.memory
    if limits.min_saved is not None and mem.saved_bytes_checkpointed >= 0:
        freed, total = mem.saved_bytes_saved, mem.saved_bytes_baseline
        share = freed / total if total else 0.0
        kind, need = limits.min_saved
        if (share if kind == "share" else freed) < need:
            problems.append(
                f"checkpointing frees {_mib(freed)} of {_mib(total)} saved for backward ({share:.0%}), "
                f"below min_saved={limits.min_saved_text!r} ({limits.min_saved_where}); regions: "
                f"{', '.join(report.regions) or 'none'}"
            )
    if limits.max_overhead is not None:
        # verify times one step each way, its baseline under counting hooks: too rough to
        # hold a limit against, so the steps are timed again, interleaved.
        ckpt_s, base_s = _retime(model, inputs)
        ratio = ckpt_s / base_s if base_s > 0 else math.inf
        if ratio > limits.max_overhead:
            problems.append(
                f"a checkpointed step takes {ratio:.2f}x the bypassed one ({ckpt_s * 1e3:.1f} ms vs "
                f"{base_s * 1e3:.1f} ms, fastest of 3), above max_overhead={limits.max_overhead:g} "
                f"({limits.max_overhead_where}); `ckptlint plan` finds cheaper regions"
            )
    return problems


def _retime(model: Any, inputs: Any, steps: int = 3) -> tuple[float, float]:
    """Fastest of ``steps`` checkpointed and bypassed steps, interleaved."""
    import torch

    from runtime_checks.bypass import bypass_checkpointing
    from runtime_checks.profile import _loss, preserved
    from runtime_checks.verify import _fresh_inputs, _resolve_device

    if not isinstance(model, torch.nn.Module):
        model = model()  # a factory, as verify accepts
    device = _resolve_device(model, None)
    best = [math.inf, math.inf]
    with preserved(model):
        for _ in range(steps):
            for i, ctx in enumerate((None, bypass_checkpointing)):
                args, kwargs, _ = _fresh_inputs(inputs, device, None)
                start = time.perf_counter()
                with torch.enable_grad(), (ctx(model) if ctx else contextlib.nullcontext()):
                    loss = _loss(model(*args, **kwargs), None, 0)
                    loss.backward()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                best[i] = min(best[i], time.perf_counter() - start)
                for p in model.parameters():
                    p.grad = None
    return best[0], best[1]


def _mib(n: float) -> str:
    from runtime_checks.report import _bytes

    return _bytes(int(n))
