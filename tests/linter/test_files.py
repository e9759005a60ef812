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


# --- hostile trees: symlinks, unreadable folders, broken .gitignore ---------------------

from ckptlint.files import list_python_files  # noqa: E402


def test_symlink_to_parent_checks_each_file_once(tmp_path: Path) -> None:
    _touch(tmp_path, "pkg/a.py", "pkg/sub/b.py")
    (tmp_path / "pkg" / "self").symlink_to(".")  # ln -s . pkg/self: was 41 copies of each file
    (tmp_path / "pkg" / "sub" / "up").symlink_to("..")
    assert _rel(iter_python_files([str(tmp_path)]), tmp_path) == ["pkg/a.py", "pkg/sub/b.py"]


def test_two_loop_links_stay_linear(tmp_path: Path) -> None:
    # Two self-links made the walk exponential; now each folder is walked once.
    for i in range(12):
        _touch(tmp_path, f"d{i}/m.py")
        (tmp_path / f"d{i}" / "loop1").symlink_to("..")
        (tmp_path / f"d{i}" / "loop2").symlink_to(".")
    files = iter_python_files([str(tmp_path)])
    assert _rel(files, tmp_path) == sorted(f"d{i}/m.py" for i in range(12))


def test_linked_folder_is_listed_by_its_real_path_and_outside_ones_once(tmp_path: Path) -> None:
    _touch(tmp_path, "tree/models/m.py", "elsewhere/e.py")
    (tmp_path / "tree" / "a_legacy").symlink_to("models")  # sorts before the real folder
    (tmp_path / "tree" / "ext").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "tree" / "ext2").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "tree" / "alias.py").symlink_to("models/m.py")
    got = _rel(iter_python_files([str(tmp_path / "tree")]), tmp_path / "tree")
    assert got == ["ext/e.py", "models/m.py"]


def test_unreadable_folder_is_a_problem_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _touch(tmp_path, "ok/a.py", "secret/s.py")
    secret = tmp_path / "secret"
    secret.chmod(0)
    real_scandir = os.scandir

    def scandir(path):  # root ignores permissions: refuse as the OS would for a user
        if os.path.realpath(path) == str(secret.resolve()):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    try:
        listing = list_python_files([str(tmp_path)])
    finally:
        secret.chmod(0o755)
    assert _rel(listing.files, tmp_path) == ["ok/a.py"]
    assert listing.problems == [(str(secret), "cannot read directory: Permission denied")]


@pytest.mark.parametrize("pattern", ["[]", "[z-a]", "[!]", "a[", "[[]"])
def test_invalid_gitignore_patterns_are_skipped_with_a_warning(tmp_path: Path, pattern: str) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".gitignore").write_text(f"{pattern}\nskipped.py\n")
    _touch(tmp_path, "kept.py", "skipped.py")
    listing = list_python_files([str(tmp_path)])
    assert _rel(listing.files, tmp_path) == ["kept.py"]
    if pattern == "[z-a]":
        (warning,) = listing.warnings
        assert ".gitignore:1: pattern '[z-a]' ignored" in warning


def test_bracket_after_open_bracket_is_literal_like_git(tmp_path: Path) -> None:
    ignore = GitIgnore(tmp_path, ["[]]x.py"])
    assert ignore.match(tmp_path / "]x.py", False) is True
    assert ignore.match(tmp_path / "ax.py", False) is None


def test_named_folder_ignored_by_an_enclosing_repo_is_still_walked(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".gitignore").write_text("/versions\n")
    _touch(tmp_path, "versions/lib/a.py", "other.py")
    assert _rel(iter_python_files([str(tmp_path / "versions" / "lib")]), tmp_path) == ["versions/lib/a.py"]
    assert _rel(iter_python_files([str(tmp_path)]), tmp_path) == ["other.py"]
