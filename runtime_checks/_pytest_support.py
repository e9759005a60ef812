"""The heavy half of the pytest plugin: verification, hypothesis runs, failure messages.

Imported by :mod:`runtime_checks.pytest_plugin` only when a test uses the
``ckpt_verify`` fixture or the ``ckpt_equivalence`` marker, so suites that do not
use the plugin never import torch or hypothesis through it.
"""

from __future__ import annotations

import inspect
import math
import random
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

import pytest

from runtime_checks._pytest_options import (
    MARKER,
    CkptOptions,
    in_ci,
    item_options,
    marker_kwargs,
    options_from_config,
)
from runtime_checks._pytest_summary import current_item, record

try:
    import torch
except ImportError:  # pragma: no cover - exercised only where torch is absent
    torch = None  # type: ignore[assignment]

__all__ = ["CkptVerify", "describe_inputs", "require_device", "run_marked_test"]

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
# descriptions
# ---------------------------------------------------------------------------------------------


def describe_inputs(inputs: Any) -> str:
    """Shapes and dtypes of an inputs value: ``x: float32[2, 16] requires_grad``."""
    if isinstance(inputs, Mapping):
        parts = [f"{key}: {_describe_value(value)}" for key, value in inputs.items()]
    elif isinstance(inputs, (tuple, list)):
        parts = [f"arg{index}: {_describe_value(value)}" for index, value in enumerate(inputs)]
    else:
        parts = [f"arg0: {_describe_value(inputs)}"]
    return ", ".join(parts) if parts else "(no inputs)"


def _describe_value(value: Any) -> str:
    if torch is not None and isinstance(value, torch.Tensor):
        dtype = str(value.dtype).removeprefix("torch.")
        text = f"{dtype}[{', '.join(str(size) for size in value.shape)}]"
        if value.requires_grad:
            text += " requires_grad"
        if value.device.type != "cpu":
            text += f" on {value.device}"
        return text
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{key}: {_describe_value(item)}" for key, item in value.items()) + "}"
    if isinstance(value, (tuple, list)):
        open_, close = ("(", ")") if isinstance(value, tuple) else ("[", "]")
        return open_ + ", ".join(_describe_value(item) for item in value) + close
    text = repr(value)
    return text if len(text) <= 40 else f"<{type(value).__name__}>"


def model_name(model: Any) -> str:
    """A short name for a model or model factory, for messages and the summary."""
    if torch is not None and isinstance(model, torch.nn.Module):
        return type(model).__name__
    if inspect.isclass(model):
        return model.__name__
    name = getattr(model, "__qualname__", None) or getattr(model, "__name__", None)
    return f"{name}()" if name else type(model).__name__


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _worst(report: Any) -> Any:
    worst = getattr(report, "worst", None)
    if callable(worst):
        return worst()
    mismatches = getattr(report, "mismatches", ())
    return mismatches[0] if mismatches else None


def _mismatch_entry(mismatch: Any) -> dict[str, Any] | None:
    if mismatch is None:
        return None
    return {
        "kind": mismatch.kind,
        "name": mismatch.name,
        "region": mismatch.region,
        "abs": _finite(mismatch.max_abs_err),
        "rel": _finite(mismatch.max_rel_err),
    }


def summary_entry(report: Any, model: Any) -> dict[str, Any]:
    """Plain-data digest of a report for the terminal summary (JSON-serialisable)."""
    worst = _worst(report)
    memory = getattr(report, "memory", None)
    timing = getattr(report, "timing", None)
    return {
        "model": model_name(model),
        "equivalent": bool(report.equivalent),
        "device": str(getattr(report, "device", "?")),
        "worst": _mismatch_entry(worst),
        "worst_parameter": _mismatch_entry(_worst_parameter(report)),
        "saved_bytes": getattr(memory, "saved_bytes_saved", None),
        "baseline_bytes": getattr(memory, "saved_bytes_baseline", None),
        "checkpointed_bytes": getattr(memory, "saved_bytes_checkpointed", None),
        "ratio": _finite(getattr(timing, "ratio", None)),
    }


_PARAMETER_KINDS = ("grad", "missing_grad", "unexpected_grad")


def _worst_parameter(report: Any) -> Any:
    """The parameter (or input) gradient mismatch with the largest error, or None."""
    for mismatch in getattr(report, "mismatches", ()):  # largest error first
        if mismatch.kind in _PARAMETER_KINDS:
            return mismatch
    return None


def _describe_mismatch(mismatch: Any) -> str:
    region = f" in checkpoint region {mismatch.region!r}" if mismatch.region else " (region not localised)"
    size = ""
    abs_err, rel_err = _finite(mismatch.max_abs_err), _finite(mismatch.max_rel_err)
    if abs_err is not None:
        size = f": max abs err {abs_err:.3g}" + (f", max rel err {rel_err:.3g}" if rel_err is not None else "")
    detail = getattr(mismatch, "detail", "")
    if detail:
        detail = detail if len(detail) <= 200 else detail[:200] + " ..."
        detail = f" ({detail})"
    return f"{mismatch.kind} {mismatch.name!r}{region}{size}{detail}"


def failure_message(report: Any, model: Any, inputs: Any, reproduce: str | None = None) -> str:
    """The diagnosis shown when a model is not equivalent.

    Verdict, the regions that break equivalence, the worst mismatch (when it is not a
    parameter's), the worst parameter, the inputs' shapes, how to reproduce, the table.
    """
    mismatches = getattr(report, "mismatches", ())
    count = len(mismatches)
    device = getattr(report, "device", "?")
    plural = "es" if count != 1 else ""
    verdict = (
        f"checkpointed {model_name(model)} is not gradient-equivalent to its un-checkpointed baseline "
        f"on {device}: {count} mismatch{plural}"
    )
    lines = [verdict]
    regions = list(dict.fromkeys(m.region for m in mismatches if m.region))
    if regions:
        lines.append(f"breaking equivalence: checkpoint region{'s' if len(regions) > 1 else ''} "
                     + ", ".join(repr(region) for region in regions))
    worst, worst_parameter = _worst(report), _worst_parameter(report)
    if worst is not None and worst is not worst_parameter:
        lines.append(f"worst: {_describe_mismatch(worst)}")
    if worst_parameter is not None:
        lines.append(f"worst parameter: {_describe_mismatch(worst_parameter)}")
    lines.append(f"inputs: {describe_inputs(inputs)}")
    if reproduce:
        lines.append(reproduce)
    lines.append("")
    lines.append(str(report))
    return "\n".join(lines)


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


class CkptVerify:
    """The ``ckpt_verify`` fixture value: ``verify`` preconfigured from the plugin options."""

    def __init__(self, config: pytest.Config) -> None:
        _torch()  # fail the requesting test now, naming the extra to install, if torch is missing
        self._config = config

    def _context(self) -> tuple[pytest.Item | None, CkptOptions, dict[str, Any]]:
        """The running test, its options and the verify() keywords its marker gives."""
        item = current_item(self._config)
        if item is None:  # called outside a test's call phase, e.g. from another fixture
            return None, options_from_config(self._config), {}
        marker = marker_kwargs(item) or {}
        return item, item_options(item), {key: marker[key] for key in _VERIFY_KEYWORDS if key in marker}

    def __call__(
        self,
        model: Any,
        inputs: Any,
        *,
        loss_fn: Any = _UNSET,
        checkpoint: Any = _UNSET,
        device: Any = _UNSET,
        dtype: Any = _UNSET,
        rtol: Any = _UNSET,
        atol: Any = _UNSET,
        seed: Any = _UNSET,
        localize: Any = _UNSET,
        checkpoint_kwargs: Any = _UNSET,
        allow_no_checkpoint: Any = _UNSET,
        autocast: Any = _UNSET,
    ) -> Any:
        """Verify ``model`` on ``inputs``; return the report, or raise ``AssertionError`` with it.

        Keywords are those of ``runtime_checks.verify``; the ones left out come from the
        test's ``ckpt_equivalence`` marker, then ``--ckpt-*`` options, then ini keys.
        """
        __tracebackhide__ = True
        item, options, marker = self._context()
        explicit = {
            "loss_fn": loss_fn,
            "checkpoint": checkpoint,
            "device": device,
            "dtype": dtype,
            "rtol": rtol,
            "atol": atol,
            "seed": seed,
            "localize": localize,
            "checkpoint_kwargs": checkpoint_kwargs,
            "allow_no_checkpoint": allow_no_checkpoint,
            "autocast": autocast,
        }
        overrides = {**marker, **{key: value for key, value in explicit.items() if value is not _UNSET}}
        return _verify_and_record(item, options, model, inputs, overrides, lambda: _given_seed_hint(item))

    def check(self, model: Any, strategy: Any, *, examples: int | None = None, **verify_kwargs: Any) -> None:
        """Draw ``inputs`` from a hypothesis ``strategy`` and verify each (``--ckpt-examples`` by default).

        A failure is shrunk to a minimal input; the ``AssertionError`` names its shapes and
        dtypes and the seed that reproduces it.
        """
        __tracebackhide__ = True
        item, options, marker = self._context()
        message = None
        try:
            run_examples(self._config, item, options, model, strategy, {**marker, **verify_kwargs},
                         examples or options.examples)
        except AssertionError as error:
            message = _with_notes(error)
        if message is not None:  # raised afresh from this hidden frame: no hypothesis/plugin frames shown
            raise AssertionError(message)

    @property
    def options(self) -> CkptOptions:
        """The settings in force for the running test (marker > CLI > ini > defaults)."""
        return self._context()[1]

    def __repr__(self) -> str:  # short: hypothesis prints it in every failing test case
        return "<ckpt_verify>"


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


# ---------------------------------------------------------------------------------------------
# marked tests
# ---------------------------------------------------------------------------------------------


def _targets(result: Any, marker: Mapping[str, Any]) -> Iterable[tuple[Any, Any]]:
    """(model, inputs) pairs to verify from a marked test's return value and its marker.

    A generator is consumed lazily, so each yielded model is verified (and can be freed)
    before the next is built.
    """
    is_generator = inspect.isgenerator(result)
    values = result if is_generator else iter([result])
    count = 0
    for value in values:
        count += 1
        model, inputs = marker.get("model"), marker.get("inputs")
        if value is None:
            pass
        elif isinstance(value, tuple) and len(value) == 2 and not _is_data(value):
            if model is not None:
                raise _MarkerUsage("the test returned (model, inputs) but the marker also has model=")
            model, inputs = value
        else:
            if model is not None:
                raise _MarkerUsage("the test returned a model but the marker also has model=")
            model = value
        if model is None:
            raise _MarkerUsage(
                "nothing to verify: give model= (and inputs=) in the marker, or return the model "
                "or (model, inputs) from the test"
            )
        if inputs is None:
            raise _MarkerUsage(
                "no inputs: give inputs= in the marker (a tensor, tuple, dict or hypothesis strategy) "
                "or return (model, inputs) from the test"
            )
        yield model, inputs
    if is_generator and count == 0:
        raise _MarkerUsage("the test yielded nothing: yield the model or (model, inputs)")


def _with_notes(error: BaseException) -> str:
    """The error's text with hypothesis' "Failing test case: ..." notes, each shortened."""
    notes = [note if len(note) <= 400 else note[:400] + " ..." for note in getattr(error, "__notes__", ())]
    return "\n".join([str(error), *notes])


class _MarkerUsage(Exception):
    """A marked test that does not say what to verify."""


def run_marked_test(item: pytest.Function, marker: Mapping[str, Any], options: CkptOptions) -> None:
    """Run a ``ckpt_equivalence``-marked test body, then verify what it (or its marker) names."""
    argnames = item._fixtureinfo.argnames  # what pytest's own pytest_pyfunc_call passes
    result = item.obj(**{name: item.funcargs[name] for name in argnames})
    if result is None and marker.get("model") is None and "ckpt_verify" in item.fixturenames:
        return  # the marker only configured the fixture, which did the verifying
    overrides = {key: marker[key] for key in _VERIFY_KEYWORDS if key in marker}
    message = None
    try:
        for model, inputs in _targets(result, marker):
            if "world_size" in marker:
                from runtime_checks._pytest_distributed import verify_distributed_and_record

                verify_distributed_and_record(item, options, model, inputs, marker)
            elif _is_strategy(inputs):
                run_examples(item.config, item, options, model, inputs, overrides, options.examples)
            else:
                _verify_and_record(item, options, model, inputs, overrides)
    except _MarkerUsage as error:
        message = f"@pytest.mark.{MARKER} on {item.name}: {error}"
    except AssertionError as error:
        message = _with_notes(error)
    if message is not None:  # outside the except block: no "during handling" chain in the output
        pytest.fail(message, pytrace=False)
