"""Running verify for a test: torch and device checks, keywords, one recorded verification, hypothesis searches.

``_verify_and_record`` is the one place a verification of the plugin runs and
lands in the summary; ``run_examples`` drives it over inputs drawn by
hypothesis. Part of the plugin's heavy half (see :mod:`runtime_checks._pytest_support`).
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import pytest

from runtime_checks._pytest_describe import failure_message, model_name, summary_entry
from runtime_checks._pytest_options import CkptOptions, in_ci
from runtime_checks._pytest_summary import record

try:
    import torch
except ImportError:  # pragma: no cover - exercised only where torch is absent
    torch = None  # type: ignore[assignment]

__all__ = ["require_device", "resolve_device", "run_examples"]

_INSTALL_HINT = "the ckptlint pytest fixtures need torch: pip install 'ckptlint[runtime]' (install torch first)"


def _torch() -> Any:
    if torch is None:
        pytest.fail(_INSTALL_HINT, pytrace=False)
    return torch


def _verify_function() -> Callable[..., Any]:
    try:
        from runtime_checks.verify import verify
    except ImportError as error:
        pytest.fail(f"{_INSTALL_HINT} ({error})", pytrace=False)
    return verify


# ---------------------------------------------------------------------------------------------
# devices
# ---------------------------------------------------------------------------------------------


def _device_problem(device: str) -> str | None:
    """Why ``device`` cannot be used here, or None when it can."""
    if not device.startswith("cuda"):
        return None
    torch_module = _torch()
    if not torch_module.cuda.is_available():
        build = "a CPU-only build" if torch_module.version.cuda is None else "no CUDA device visible"
        return f"checkpoint-equivalence device {device!r} requested but CUDA is not available (torch {torch_module.__version__}, {build})"
    index_text = device.partition(":")[2]
    if index_text.isdigit():  # anything malformed is left to verify(), which names it
        index = int(index_text)
        count = torch_module.cuda.device_count()
        if index >= count:
            return f"checkpoint-equivalence device {device!r} requested but only {count} CUDA device(s) are visible"
    return None


def require_device(options: CkptOptions, device: str | None = None) -> None:
    """Skip the running test when its device is unavailable (fail with ``--ckpt-require-device``)."""
    __tracebackhide__ = True
    problem = _device_problem(device or options.device)
    if problem is None:
        return
    if options.require_device:
        pytest.fail(f"{problem} and --ckpt-require-device is set", pytrace=False)
    try:  # report the skip at the test's location (as skip markers do), not at this line
        skip = pytest.skip.Exception(problem, _use_item_location=True)
    except TypeError:  # pragma: no cover - a pytest without the private keyword
        pytest.skip(problem)
    raise skip


def resolve_device(options: CkptOptions) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; anything else as given."""
    if options.device != "auto":
        return options.device
    return "cuda" if _torch().cuda.is_available() else "cpu"


# ---------------------------------------------------------------------------------------------
# verification
# ---------------------------------------------------------------------------------------------

_UNSET: Any = object()
#: Marker keywords passed to verify() unchanged (the rest are options, resolved in CkptOptions).
_VERIFY_KEYWORDS = ("checkpoint", "checkpoint_kwargs", "loss_fn", "dtype", "seed")


def _verify_kwargs(options: CkptOptions, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """verify() keywords: explicit overrides > marker > CLI > ini (the last three are in options)."""
    kwargs: dict[str, Any] = {
        "device": resolve_device(options),
        "rtol": options.rtol,
        "atol": options.atol,
        "localize": options.localize,
    }
    for key, value in overrides.items():
        if value is not _UNSET:
            kwargs[key] = value
    if kwargs["device"] is None or str(kwargs["device"]) == "auto":
        kwargs["device"] = resolve_device(replace(options, device="auto"))
    return kwargs


def _verify_and_record(
    item: pytest.Item | None,
    options: CkptOptions,
    model: Any,
    inputs: Any,
    overrides: Mapping[str, Any],
    reproduce: Callable[[], str | None] = lambda: None,
) -> Any:
    __tracebackhide__ = True
    kwargs = _verify_kwargs(options, overrides)
    require_device(options, str(kwargs["device"]))
    if callable(inputs) and not _is_data(inputs):
        inputs = inputs()  # an inputs factory, e.g. lambda: torch.randn(4, 16)
    report, usage_error = None, None
    try:
        report = _verify_function()(model, inputs, **kwargs)
    except ValueError as error:  # VerifyError: a bad argument, named in the message
        if type(error).__name__ != "VerifyError":
            raise
        usage_error = str(error)
    if usage_error is not None:  # outside the except block: one line, no chained traceback
        pytest.fail(f"ckpt_verify({model_name(model)}, ...): {usage_error}", pytrace=False)
    entry = summary_entry(report, model)
    if not report.equivalent:
        record(item, entry)
        raise AssertionError(failure_message(report, model, inputs, reproduce()))
    from runtime_checks import thresholds  # min_saved / max_overhead

    missed = thresholds.problems(item, report, model, inputs)
    if missed:  # equivalent, but the summary must not say PASS for a failing test
        entry["thresholds"] = missed
    record(item, entry)
    if missed:
        raise AssertionError(thresholds.failure_text(missed))
    return report


def _is_data(value: Any) -> bool:
    return torch is not None and isinstance(value, (torch.Tensor, torch.nn.Module))


# ---------------------------------------------------------------------------------------------
# hypothesis
# ---------------------------------------------------------------------------------------------


def _is_strategy(value: Any) -> bool:
    if sys.modules.get("hypothesis") is None:  # a strategy object implies hypothesis was imported
        return False
    from hypothesis.strategies import SearchStrategy

    return isinstance(value, SearchStrategy)


def _given_seed_hint(item: pytest.Item | None) -> str | None:
    """How to reproduce a failure inside a user's ``@given`` test, from hypothesis' own seed."""
    if item is None or sys.modules.get("hypothesis") is None:
        return None
    from hypothesis import core, is_hypothesis_test

    test = getattr(item, "obj", None)
    if test is None or not is_hypothesis_test(test):
        return None
    explicit = getattr(test, "_hypothesis_internal_use_seed", None)
    if explicit is not None:
        return f"hypothesis seed: {explicit} (from @seed on the test)"
    if core.global_force_seed is not None:
        return f"hypothesis seed: {core.global_force_seed}; reproduce with: pytest '{item.nodeid}' --hypothesis-seed={core.global_force_seed}"
    generated = getattr(test, "_hypothesis_internal_use_generated_seed", None)
    if generated is not None:
        return f"hypothesis seed: {generated}; reproduce with: pytest '{item.nodeid}' --hypothesis-seed={generated}"
    test_settings = getattr(test, "_hypothesis_internal_use_settings", None)
    if test_settings is not None and test_settings.derandomize:
        return "hypothesis seed: derandomized (every run draws the same examples)"
    return None


def _choose_seed(config: pytest.Config) -> tuple[int | str, str]:
    """The seed for a plugin-driven hypothesis run, and where it came from.

    ``--hypothesis-seed`` wins (hypothesis accepts any string there, as here); a derandomized
    profile or a CI run (the ``CI`` environment variable, as for the ``ckpt`` profile) uses a
    fixed seed; otherwise a fresh random seed, printed with any failure.
    """
    from hypothesis import settings

    try:
        option = config.getoption("hypothesis_seed")
    except ValueError:  # hypothesis' pytest plugin disabled (-p no:hypothesispytest)
        option = None
    if option is not None:
        text = str(option)
        return (int(text) if text.lstrip("-").isdigit() else text), "--hypothesis-seed"
    if settings.default.derandomize:
        return 0, "derandomized profile"
    if in_ci():
        return 0, "derandomized because CI is set"
    return random.SystemRandom().getrandbits(64), "random"


def run_examples(
    config: pytest.Config,
    item: pytest.Item | None,
    options: CkptOptions,
    model: Any,
    strategy: Any,
    verify_kwargs: Mapping[str, Any],
    examples: int,
) -> None:
    """Verify ``model`` on ``examples`` inputs drawn from ``strategy``; shrink and report a failure.

    The search and every shrink step verify without localisation (a failing
    example costs a few runs, not one per region); the shrunk example is
    verified once more with localisation, for the report the user reads.
    """
    __tracebackhide__ = True
    from hypothesis import HealthCheck, Phase, given, seed, settings

    chosen, origin = _choose_seed(config)
    where = f"pytest '{item.nodeid}' " if item is not None else "pytest "
    reproduce = f"hypothesis seed: {chosen} ({origin}); reproduce with: {where}--hypothesis-seed={chosen}"
    localize = bool(_verify_kwargs(options, verify_kwargs)["localize"])
    search_kwargs = {**verify_kwargs, "localize": False}
    failing: dict[str, Any] = {}

    # database=None: the inner function is the same for every test, so a shared example
    # database would replay one test's failures in another; the printed seed reproduces instead.
    # No explain phase: it reruns a failing model dozens of times to word its explanation.
    @seed(chosen)
    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=False,
        report_multiple_bugs=False,
        print_blob=False,
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    )
    @given(strategy)
    def ckpt_equivalence(inputs: Any) -> None:
        __tracebackhide__ = True
        failing["inputs"] = inputs  # the last failing call is hypothesis' final, shrunk one
        _verify_and_record(item, options, model, inputs, search_kwargs, lambda: reproduce)
        failing.pop("inputs", None)

    try:
        ckpt_equivalence()
    except AssertionError as error:
        if not localize or "inputs" not in failing:
            raise
        notes = list(getattr(error, "__notes__", ()))
        try:
            _verify_and_record(None, options, model, failing["inputs"], verify_kwargs, lambda: reproduce)
        except AssertionError as localised:
            for note in notes:
                localised.add_note(note)
            raise localised from None
        raise  # equivalent on the rerun (a flaky model): the search's own report stands
