"""Side effects: hooks run again by the recompute are reported even when every gradient matches."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from runtime_checks import verify  # noqa: E402
from runtime_checks.advice import advise  # noqa: E402
from tests.runtime.reporting import one_line  # noqa: E402
from tests.runtime.zoo import tiny_gpt2, token_ids  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")]




class Stats:
    """An activation-statistics collector, the kind users register as forward hooks."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, _module: torch.nn.Module, _args: object, _out: object) -> None:
        self.calls += 1


def _hook_dicts(model: torch.nn.Module) -> list[tuple[str, dict]]:
    kinds = ("_forward_pre_hooks", "_forward_hooks", "_backward_hooks", "_backward_pre_hooks")
    return [(n, k, dict(getattr(m, k))) for n, m in model.named_modules() for k in kinds] + [
        ("global", dict(torch.nn.modules.module._global_forward_hooks))
    ]


def test_forward_hook_counter_on_gpt2_counts_the_recompute() -> None:
    model = tiny_gpt2()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    model.train()
    stats = Stats()
    handles = [block.mlp.register_forward_hook(stats) for block in model.transformer.h]
    pre = Stats()
    handles.append(model.transformer.h[0].mlp.register_forward_pre_hook(lambda m, a: pre(m, a, None)))
    seen: list[str] = []
    handles.append(torch.nn.modules.module.register_module_forward_hook(
        lambda m, a, o: seen.append(type(m).__name__) if isinstance(m, torch.nn.LayerNorm) else None
    ))
    try:
        before = _hook_dicts(model)
        report = verify(model, token_ids())
        assert report.equivalent, str(report)  # the gradients match ...
        calls = {(h.module, h.kind): (h.baseline, h.checkpointed) for h in report.side_effects}
        # ... but the statistics collector counted every block twice.
        assert calls[("transformer.h.0.mlp", "forward hook")] == (1, 2)
        assert calls[("transformer.h.1.mlp", "forward hook")] == (1, 2)
        assert calls[("transformer.h.0.mlp", "forward pre-hook")] == (1, 2)
        base, ckpt = calls[("global", "global forward hook")]
        assert ckpt > base
        assert "hooks-rerun" in [a.cause for a in advise(report)]
        assert "forward hook" in one_line(report) and "ran 4 times, baseline 2" in one_line(report)
        assert _hook_dicts(model) == before  # the original hook objects are back
    finally:
        for h in handles:
            h.remove()


def test_no_hooks_no_side_effects() -> None:
    model = tiny_gpt2()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    report = verify(model, token_ids())
    assert report.equivalent and report.side_effects == ()
