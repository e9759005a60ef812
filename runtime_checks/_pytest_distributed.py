"""``@pytest.mark.ckpt_equivalence(world_size=2, wrap="ddp")``: the marker's distributed path.

The model is built in every rank, so the marker (or the test's return value)
must give a factory that pickles by reference (a module-level function or
class), not a built model. The verdict is recorded in the terminal summary
like a single-process one, from rank 0's report.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

__all__ = ["DISTRIBUTED_KEYWORDS", "verify_distributed_and_record"]

#: Marker keywords of the distributed path (``world_size`` switches it on).
DISTRIBUTED_KEYWORDS = ("world_size", "wrap", "backend", "wrap_kwargs", "timeout")


def verify_distributed_and_record(
    item: pytest.Item, options: Any, model: Any, inputs: Any, marker: Mapping[str, Any]
) -> None:
    """Verify ``model`` (a factory) under torch.distributed as the marker says; fail the test with the report."""
    __tracebackhide__ = True
    import torch

    from runtime_checks._pytest_describe import model_name, summary_entry
    from runtime_checks._pytest_options import MARKER
    from runtime_checks._pytest_runs import _is_strategy
    from runtime_checks._pytest_summary import record
    from runtime_checks.distributed import DistributedError, verify_distributed
    from runtime_checks.verify import VerifyError

    where = f"@pytest.mark.{MARKER}(world_size=...)"
    if isinstance(model, torch.nn.Module):
        pytest.fail(f"{where}: give a model factory (each rank builds its own model), not a built {type(model).__name__}",
                    pytrace=False)
    if _is_strategy(inputs):
        from runtime_checks._dist_cli import draw_examples

        examples = draw_examples(inputs, options.examples, marker.get("seed", 0) or 0, int(marker["world_size"]))
    else:
        examples = [inputs() if callable(inputs) and not isinstance(inputs, torch.Tensor) else inputs]
    kwargs = {k: marker[k] for k in ("wrap", "backend", "wrap_kwargs", "timeout", "checkpoint", "checkpoint_kwargs",
                                     "loss_fn", "seed", "allow_no_checkpoint") if k in marker}
    kwargs.update(rtol=options.rtol, atol=options.atol)
    message = None
    for example in examples:
        try:
            report = verify_distributed(model, example, world_size=marker["world_size"], **kwargs)
        except (VerifyError, DistributedError) as error:
            message = f"{where} on {item.name}: {error}"
            break
        entry = summary_entry(report.ranks[0], model) if report.ranks else {"model": model_name(model)}
        entry.update(equivalent=report.equivalent, device=f"{report.wrap} x{report.world_size} ({report.backend})")
        record(item, entry)
        if not report.equivalent:
            message = f"{model_name(model)} is not checkpoint-equivalent under torch.distributed\n{report}"
            break
    if message is not None:
        pytest.fail(message, pytrace=False)
