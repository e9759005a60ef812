"""What Python's compiler rejects is CKP001 with Python's message, and never reaches libcst."""

from __future__ import annotations

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


def test_libcst_never_sees_what_ast_rejects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import libcst

    def boom(*_a, **_k):  # pragma: no cover - the assertion is that it is not called
        raise AssertionError("libcst parser called on a file Python rejects")

    monkeypatch.setattr(libcst, "parse_module", boom)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.py").write_text("import torch.utils.checkpoint as cp\ndef f(x:\n    return cp.checkpoint(g, x)\n")
    (finding,) = lint(["."]).findings
    assert finding.code == "CKP001" and (finding.line, finding.column) == (2, 5)
