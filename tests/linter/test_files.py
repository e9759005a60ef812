"""File discovery: recursion, default skips, .gitignore, explicit paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ckptlint.files import GitIgnore, display_path, iter_python_files


def _touch(root: Path, *rels: str) -> None:
    for rel in rels:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x = 1\n")


def _rel(paths: list[str], root: Path) -> list[str]:
    return sorted(Path(os.path.relpath(p, root)).as_posix() for p in paths)


def test_recursion_and_default_skips(tmp_path: Path) -> None:
    _touch(
        tmp_path,
        "pkg/a.py", "pkg/sub/b.pyi", "pkg/notes.txt", ".git/hooks/c.py", ".venv/lib/d.py", "venv/e.py",
        "build/f.py", "pkg/__pycache__/g.py", ".tox/h.py", "node_modules/i.py", "myenv/lib/j.py",
    )
    (tmp_path / "myenv" / "pyvenv.cfg").write_text("home = /usr\n")
    assert _rel(iter_python_files([str(tmp_path)]), tmp_path) == ["pkg/a.py", "pkg/sub/b.pyi"]


def test_gitignore_rules(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".gitignore").write_text("# comment\ngenerated/\n*_pb2.py\n/top_only.py\n!keep_pb2.py\ndocs/**/conf.py\n")
    _touch(
        tmp_path,
        "src/model.py", "generated/x.py", "src/generated/y.py", "src/api_pb2.py", "src/keep_pb2.py",
        "top_only.py", "src/top_only.py", "docs/a/b/conf.py", "docs/conf.py",
    )
    (tmp_path / "src" / ".gitignore").write_text("local.py\n")
    _touch(tmp_path, "src/local.py")
    got = _rel(iter_python_files([str(tmp_path)]), tmp_path)
    assert got == ["src/keep_pb2.py", "src/model.py", "src/top_only.py"]


def test_gitignore_above_start_directory_applies(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".gitignore").write_text("vendored/\n")
    _touch(tmp_path, "src/vendored/v.py", "src/ok.py")
    assert _rel(iter_python_files([str(tmp_path / "src")]), tmp_path) == ["src/ok.py"]


def test_explicit_file_is_never_skipped(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".gitignore").write_text("ignored.py\nbuild/\n")
    _touch(tmp_path, "ignored.py", "build/b.py")
    files = iter_python_files([str(tmp_path / "ignored.py"), str(tmp_path / "build" / "b.py")])
    assert _rel(files, tmp_path) == ["build/b.py", "ignored.py"]


def test_exclude_patterns_and_dedup(tmp_path: Path) -> None:
    _touch(tmp_path, "a/x.py", "a/tests/y.py", "b/z.py")
    files = iter_python_files([str(tmp_path), str(tmp_path / "a")], exclude=["tests", "b/*"])
    assert _rel(files, tmp_path) == ["a/x.py"]


@pytest.mark.parametrize(
    ("pattern", "path", "is_dir", "expected"),
    [
        ("*.py", "a/b.py", False, True),
        ("a/*.py", "a/b.py", False, True),
        ("a/*.py", "a/c/b.py", False, None),
        ("**/foo", "x/y/foo", False, True),
        ("foo/**", "foo/x/y.py", False, True),
        ("a/**/b", "a/x/y/b", False, True),
        ("a/**/b", "a/b", False, True),
        ("dir/", "dir", False, None),
        ("dir/", "dir", True, True),
        ("b?.py", "b1.py", False, True),
        ("b[0-9].py", "bx.py", False, None),
    ],
)
def test_gitwildmatch(tmp_path: Path, pattern: str, path: str, is_dir: bool, expected: bool | None) -> None:
    gi = GitIgnore(tmp_path, [pattern])
    assert gi.match(tmp_path / path, is_dir) is expected


def test_display_path_relative_to_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert display_path(str(tmp_path / "a" / "b.py")) == "a/b.py"
    assert display_path("./a/../a/b.py") == "a/b.py"
    outside = str(tmp_path.parent / "elsewhere.py")
    assert display_path(outside) == outside.replace(os.sep, "/")
