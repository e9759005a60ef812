"""CKP003 not-checked: a file (or a statement in it) was over a per-file budget.

What: ckptlint gave up on part of the tree instead of crashing or hanging:
the file is bigger than ``max-file-bytes``, a top-level statement nests
deeper than ``max-nesting``, the file's analysis ran past ``file-timeout``
seconds or past ``max-file-memory`` megabytes, or the worker process checking
it died. The message says which budget and the measured value.

Why it matters: whatever runs under checkpoint in that file (or statement)
is unchecked, so a hazard there goes unreported; the finding makes the gap
visible, and the rest of the tree is still checked.

How to fix: raise the budget in ``[tool.ckptlint]`` (``max-file-bytes``,
``max-nesting``, ``file-timeout``, ``max-file-memory``) if the file is real
code, or ``exclude`` it if it is generated data (a huge literal table).

Example::

    def block(x):                 # CKP003: the statement nests 126 levels deep
        return x.add_([[[[ ... 120 levels ... ]]]])
"""

from __future__ import annotations

CODE = "CKP003"
NAME = "not-checked"
MESSAGE = "not checked: {why}"
EVENT = "file"


def check(event: object, ctx: object):  # pragma: no cover - produced by the engine and runner directly
    return iter(())


VALID = ["x = [[[[1]]]]\n"]
INVALID = [
    "import torch.utils.checkpoint as cp\n"
    "def f(x):\n"
    "    return cp.checkpoint(block, x, use_reentrant=False)\n"
    "def block(x):  # expect: CKP003\n"
    "    return x.add_(" + "[" * 120 + "1" + "]" * 120 + ")\n"
]
