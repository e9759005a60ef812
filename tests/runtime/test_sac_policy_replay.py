"""Why ckptlint has no rule for stateful selective-checkpoint policies (issue 9, item 7).

A ``policy_fn`` keeping a counter and ignoring ``ctx.is_recompute`` only corrupts gradients on releases
whose recompute calls the policy again. On the torch this suite runs (2.13; 2.14.1 measured the same)
the recompute replays the forward's decisions by position: the policy runs only in the forward,
``is_recompute`` is never True, and gradients match the plain run. If a release changes that, this
test fails and the rule becomes worth writing.
"""

from __future__ import annotations

from functools import partial

import pytest

torch = pytest.importorskip("torch")
checkpoint_mod = pytest.importorskip("torch.utils.checkpoint")
if not hasattr(checkpoint_mod, "create_selective_checkpoint_contexts"):
    pytest.skip("selective checkpointing needs torch >= 2.4", allow_module_level=True)


def test_stateful_policy_is_not_called_on_recompute() -> None:
    from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

    seen = {"mm": 0, "recompute": 0}

    def policy(ctx, op, *args, **kwargs):
        if ctx.is_recompute:
            seen["recompute"] += 1
        if op == torch.ops.aten.mm.default:
            seen["mm"] += 1  # stateful: alternates on every call it sees
            return CheckpointPolicy.MUST_SAVE if seen["mm"] % 2 == 1 else CheckpointPolicy.PREFER_RECOMPUTE
        return CheckpointPolicy.PREFER_RECOMPUTE

    def f(x, w):
        return torch.mm(torch.mm(x, w).sin(), w).cos().sum()

    torch.manual_seed(0)
    x = torch.randn(4, 4, requires_grad=True)
    w = torch.randn(4, 4, requires_grad=True)
    f(x, w).backward()
    expected = (x.grad.clone(), w.grad.clone())
    x.grad = w.grad = None
    checkpoint(f, x, w, use_reentrant=False, context_fn=partial(create_selective_checkpoint_contexts, policy)).backward()
    assert seen == {"mm": 2, "recompute": 0}
    assert torch.allclose(expected[0], x.grad) and torch.allclose(expected[1], w.grad)
