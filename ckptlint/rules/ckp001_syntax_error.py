"""CKP001 syntax-error: the file does not parse.

What: Python's own compiler rejects the file (a syntax error, nesting too
deep for its parser, null bytes, or bytes that are not UTF-8 without a coding
declaration), so nothing in it can be checked. The finding carries Python's
message and position, as ``python file.py`` would report them; such a file is
never handed to libcst.

Why it matters: a file the linter cannot read is a file whose checkpointed
code is unchecked; hiding that (as some linters do behind a verbose flag)
lets hazards through silently.

How to fix: fix the syntax error (or exclude generated/template files from
the check with ``exclude``).

Example::

    def forward(self, x)      # CKP001: missing ':'
        return x
"""

from __future__ import annotations

CODE = "CKP001"
NAME = "syntax-error"
MESSAGE = "syntax error: {message}"
EVENT = "file"


def check(event: object, ctx: object):  # pragma: no cover - produced by the engine directly
    return iter(())


VALID = ["x = 1\n"]
INVALID = ["def f(:  # expect: CKP001\n    pass\n"]
