"""The heavy half of the pytest plugin: verification, hypothesis runs, failure messages.

Imported by :mod:`runtime_checks.pytest_plugin` only when a test uses the
``ckpt_verify`` fixture or the ``ckpt_equivalence`` marker, so suites that do not
use the plugin never import torch or hypothesis through it.

The fixture value (:class:`CkptVerify`) and the marked-test runner live here;
how a verification runs is in :mod:`runtime_checks._pytest_runs`, how it is
worded in :mod:`runtime_checks._pytest_describe`.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from runtime_checks._pytest_describe import (  # noqa: F401  (importable from here, as before)
    describe_inputs,
    failure_message,
    model_name,
    summary_entry,
)
from runtime_checks._pytest_options import (
    MARKER,
    CkptOptions,
    item_options,
    marker_kwargs,
    options_from_config,
)
from runtime_checks._pytest_runs import (  # noqa: F401  (importable from here, as before)
    _UNSET,
    _VERIFY_KEYWORDS,
    _given_seed_hint,
    _is_data,
    _is_strategy,
    _torch,
    _verify_and_record,
    require_device,
    resolve_device,
    run_examples,
)
from runtime_checks._pytest_summary import current_item

__all__ = ["CkptVerify", "describe_inputs", "require_device", "run_marked_test"]


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
