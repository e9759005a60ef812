"""Property: on generated checkpointed functions, --unsafe-fixes output always
re-parses, a second run changes nothing, and nothing fixable remains."""

from __future__ import annotations

import os

import libcst
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckptlint.config import Config
from ckptlint.runner import RunSettings, run

from .test_fix_corpus import _assert_formatting_kept

STATEMENTS = [
    "x.add_(1)",
    "x.mul_(scale)",
    "x.masked_fill_(mask > 0, 0.0)",
    "x += y",
    "x -= y * 2",
    "y = F.relu(x, inplace=True)",
    "y = F.gelu(x)",
    "x = x + 1",
    "x.add_(\n        y,\n        alpha=2,\n    )",
    "h = x.view(-1)\n    h.add_(1)",
    "x.clamp_(min=0)  # keep positive",
    "torch.relu_(x)",
    "if flag:\n        x.sub_(1)",
    "for _ in range(2):\n        x.div_(2)",
    "y = y.add(x)",
    "y.add_(1)",
]

CALLS = [
    "checkpoint(block, x, y, mask, use_reentrant=False)",
    "checkpoint(block, x, y, mask)",
    "checkpoint(\n        block, x, y, mask,\n    )",
]


def _program(body: list[str], call: str) -> str:
    lines = "\n".join(f"    {s}" for s in body) or "    pass"
    return (
        "import torch\n"
        "import torch.nn.functional as F\n"
        "from torch.utils.checkpoint import checkpoint\n"
        "\n"
        "scale = 2.0\n"
        "flag = True\n"
        "\n"
        "\n"
        "def block(x, y, mask):\n"
        f"{lines}\n"
        "    return x + y\n"
        "\n"
        "\n"
        "def run(x, y, mask):\n"
        f"    return {call}\n"
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(STATEMENTS), max_size=6), st.sampled_from(CALLS))
def test_unsafe_fixes_reparse_and_settle(tmp_path_factory, body: list[str], call: str) -> None:  # type: ignore[no-untyped-def]
    work = tmp_path_factory.mktemp("prop")
    path = work / "m.py"
    path.write_text(_program(body, call))
    cwd = os.getcwd()
    os.chdir(work)
    try:
        opts = dict(config=Config(root=str(work), project_root=str(work)), use_cache=False, jobs=1)
        first = run(["m.py"], RunSettings(fix=True, unsafe_fixes=True, **opts))
        fixed = path.read_text()
        libcst.parse_module(fixed)
        _assert_formatting_kept(_program(body, call).encode(), fixed.encode())
        assert first.fixes is not None and not first.fixes.failures, first.fixes.failures
        second = run(["m.py"], RunSettings(fix=True, unsafe_fixes=True, **opts))
        assert second.fixes is not None and second.fixes.applied == []
        assert path.read_text() == fixed
        assert [f for f in second.findings if f.fix is not None] == []
    finally:
        os.chdir(cwd)
