"""Rebinding fixes (CKP101 ``h.add_(1)`` -> ``h = h.add(1)``, CKP102 ``h += 1`` ->
``h = h + 1``) must not change what the checkpointed function itself returns
(issue 11): ``h = x; h.add_(1); return x * 3`` returns 6, and 3 after a naive
rebinding. Each case is linted and fixed with the real engine, and where a
fix is offered the fixed function is run with torch against the original.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ckptlint.config import Config
from ckptlint.runner import RunSettings, run

HEADER = """\
import torch
from torch.utils.checkpoint import checkpoint


"""
FOOTER = """


def run(x):
    return checkpoint(block, x, use_reentrant=False)
"""

# (id, body of the module's functions, fix expected)
CASES = [
    ("alias-read-later", "def block(x):\n    h = x\n    h.add_(1)\n    return x * 3", False),
    ("alias-read-later-aug", "def block(x):\n    h = x\n    h += 1\n    return x * 3", False),
    ("alias-only", "def block(x):\n    h = x\n    h.add_(1)\n    return h * 3", True),
    ("input-itself", "def block(x):\n    x.mul_(2)\n    return x + 1", True),
    ("input-itself-aug", "def block(x):\n    x *= 2\n    return x + 1", True),
    ("view-read-later", "def block(x):\n    v = x.view(-1)\n    x.mul_(2)\n    return v.sum()", False),
    ("view-mutated-input-read", "def block(x):\n    v = x[0]\n    v.add_(1)\n    return x.sum()", False),
    ("container-read-later", "def block(x):\n    keep = [x]\n    x.add_(1)\n    return keep[0] * 2", False),
    (
        "next-loop-iteration",
        "def block(x):\n    h = x\n    out = 0\n    for _ in range(2):\n        out = out + x * 2\n        h.add_(1)\n    return out",
        False,
    ),
    ("closure", "def block(x):\n    f = lambda: x * 2\n    h = x\n    h.add_(1)\n    return f()", False),
    ("fresh-before", "def block(x):\n    y = x * 2\n    x.add_(1)\n    return x + y", True),
    ("appended-read-later", "def block(x):\n    keep = []\n    keep.append(x)\n    x.add_(1)\n    return keep[0] * 2", False),
    ("derived-after", "def block(x):\n    h = x\n    h.add_(1)\n    y = h * 2\n    return torch.relu(y)", True),
    ("called-after", "def block(x):\n    x.mul_(2)\n    return torch.nn.functional.relu(x)", True),
    (
        "helper",
        "def helper(t):\n    t.add_(1)\n\n\ndef block(x):\n    helper(x)\n    return x * 3",
        False,
    ),
]


def _module(body: str) -> str:
    return HEADER + body + FOOTER


def _lint_and_fix(tmp_path: Path, body: str) -> tuple[list[Any], str]:
    path = tmp_path / "m.py"
    path.write_text(_module(body))
    settings = dict(config=Config(root=str(tmp_path)), use_cache=False, jobs=1)
    before = run([str(path)], RunSettings(**settings))
    run([str(path)], RunSettings(fix=True, unsafe_fixes=True, **settings))
    return [f for f in before.findings if f.code in ("CKP101", "CKP102")], path.read_text()


def _block(source: str) -> Any:
    namespace: dict[str, Any] = {}
    exec(compile(source, "m.py", "exec"), namespace)
    return namespace["block"]


@pytest.mark.parametrize(("body", "fixable"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rebinding_fix_only_where_the_result_is_kept(tmp_path: Path, body: str, fixable: bool) -> None:
    torch = pytest.importorskip("torch")
    findings, fixed = _lint_and_fix(tmp_path, body)
    assert findings, "the hazard must still be reported"
    assert all((f.fix is not None) == fixable for f in findings), [(f.code, f.fix) for f in findings]
    original = _block(_module(body))
    x = torch.arange(1.0, 5.0)
    expected = original(x.clone())
    if fixable:
        assert fixed != _module(body)
        assert torch.equal(_block(fixed)(x.clone()), expected)  # same result, input untouched
        probe = x.clone()
        _block(fixed)(probe)
        assert torch.equal(probe, x)
    else:
        assert fixed == _module(body)


def test_naive_rebinding_would_change_the_result() -> None:
    # Why the rule exists: the reproducer, fixed by string surgery.
    torch = pytest.importorskip("torch")
    body = CASES[0][1]
    naive = body.replace("h.add_(1)", "h = h.add(1)")
    assert _block(_module(body))(torch.ones(1)).item() == 6.0
    assert _block(_module(naive))(torch.ones(1)).item() == 3.0
