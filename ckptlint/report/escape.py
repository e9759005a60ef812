"""Text from files (source lines, file names) made safe for a terminal or a log.

A source line or a file name can hold escape sequences (``\\x1b[2J`` clears
the screen, OSC 8 forges links, ``\\x1b]0;`` retitles the window), bidi
overrides that make code read differently from how it runs ("Trojan
source"), and, in file names, bytes that are not UTF-8 (Python hands those
over as lone surrogates, which no UTF-8 stream can write). Each becomes a
visible escape: ``\\x1b``, ``\\u202e``, and ``\\xe9`` for the undecodable byte
0xE9.
"""

from __future__ import annotations

import re

__all__ = ["printable"]

_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's stand-in for the byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with control characters, bidi controls and undecodable bytes escaped.

    Tabs stay; newlines stay only with ``keep_newlines`` (a file name with a
    newline must not start a fake report line).
    """
    if keep_newlines:
        return _UNSAFE.sub(_escape, text)
    return _UNSAFE.sub(_escape, text).replace("\n", "\\n")
