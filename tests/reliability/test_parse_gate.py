"""What Python's compiler rejects is CKP001 with Python's message, and never reaches libcst."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ckptlint.engine import lint


@pytest.mark.parametrize(
    ("data", "message", "line", "column"),
    [
        (b"x = 1\ny = '\xe9'\n", "not UTF-8 (byte 0xe9)", 2, 5),
        (b"# coding: no-such-codec\nx = 1\n", "unknown encoding: no-such-codec", 1, 0),
        (b"x = 1\0\n", "null bytes", 1, 0),
        (b"print 'py2'\n", "Missing parentheses", 1, 0),
        (b"x = " + b"-" * 10000 + b"1\n", "too complex", 1, 0),  # CPython 3.11: a bare MemoryError
    ],
)
def test_python_rejects_so_ckp001(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: bytes, message: str,
                                  line: int, column: int) -> None:
    monkeypatch.chdir(tmp_path)
    for name, prefix in (("plain.py", b""), ("driver.py", b"import torch.utils.checkpoint\n")):
        (tmp_path / name).write_bytes(data if not prefix or data.startswith(b"#") else prefix + data)
    result = lint(["."])
    assert not result.errors
    by_path = {f.path: f for f in result.findings}
    assert set(by_path) == {"plain.py", "driver.py"}
    for f in by_path.values():
        assert f.code == "CKP001" and message in f.message
    assert (by_path["plain.py"].line, by_path["plain.py"].column) == (line, column)


def test_coding_cookie_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "encoding_latin1.py"
    assert b"coding" in fixture.read_bytes().splitlines()[0] + fixture.read_bytes().splitlines()[1]
    result = lint([str(fixture)])
    assert [f.code for f in result.findings] == ["CKP101"]


@pytest.mark.parametrize("deep", ["(" * 1300 + "1" + ")" * 1300, "[" * 150 + "1" + "]" * 150 + " +"])
def test_libcst_never_sees_deep_nesting_python_rejects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        deep: str) -> None:
    import libcst

    def boom(*_a, **_k):  # pragma: no cover - the assertion is that it is not called
        raise AssertionError("libcst parser called on deep nesting Python rejects")

    monkeypatch.setattr(libcst, "parse_module", boom)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.py").write_text(f"import torch.utils.checkpoint as cp\ny = {deep}\n")
    (finding,) = lint(["."]).findings
    assert finding.code == "CKP001" and finding.line == 2


def test_newer_syntax_python_rejects_still_goes_to_libcst_when_shallow(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    newer = ("from torch.utils.checkpoint import checkpoint\ntype Pair = tuple[int, int]\n"
             "def g(x):\n    x.add_(1)\n    return x\ndef f(x):\n    return checkpoint(g, x, use_reentrant=False)\n")
    (tmp_path / "new.py").write_text(newer)
    (tmp_path / "broken.py").write_text(newer + "def bad(:\n    pass\n")
    got = sorted((f.path, f.line, f.code) for f in lint(["."]).findings)
    # Python 3.11 rejects line 2 of both; libcst reads new.py (3.12 syntax), not broken.py.
    first_error = 2 if sys.version_info < (3, 12) else 8
    assert got == [("broken.py", first_error, "CKP001"), ("new.py", 4, "CKP101")]
