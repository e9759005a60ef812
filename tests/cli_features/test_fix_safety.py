"""``--fix`` on hostile trees (issue 11): symlinks, linked folders outside the
tree, read-only files, unwritable folders, fixes that would not compile.

Every test builds a real tree with real symlinks under ``tmp_path`` and runs
the real engine; the CLI tests run ``python -m ckptlint`` in a subprocess so
that the report, the exit status and the absence of a traceback are what a
user sees.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ckptlint.config import Config
from ckptlint.fixes import StaleFileError, read_source, write_source
from ckptlint.fixing import fix_passes
from ckptlint.runner import RunSettings, run
from ckptlint.types import Edit, Finding, Fix

REPO = Path(__file__).resolve().parents[2]

# CKP401 (unsafe fix: adds use_reentrant=False) and CKP105 (safe: inplace=False).
MODEL = """\
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def block(x):
    return F.relu(x, inplace=True)


def run(x):
    return checkpoint(block, x)
"""


def _fix(root: Path, *paths: str, unsafe: bool = True):  # type: ignore[no-untyped-def]
    settings = RunSettings(config=Config(root=str(root)), use_cache=False, jobs=1, fix=True, unsafe_fixes=unsafe)
    return run(list(paths) or ["."], settings)


def _compiles(path: Path) -> bool:
    try:
        compile(path.read_bytes(), str(path), "exec", dont_inherit=True)
    except SyntaxError:
        return False
    return True


def _hashes(root: Path) -> dict[str, str]:
    """Every regular file under ``root`` (links not followed) -> sha256 of its bytes, plus its mode."""
    out: dict[str, str] = {}
    for folder, dirs, names in os.walk(root):
        for name in names:
            p = Path(folder, name)
            if not p.is_symlink():
                out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest() + oct(p.stat().st_mode)
    return out


def test_linked_folder_file_is_fixed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The reproducer: ``legacy_models -> models`` made --fix --unsafe-fixes
    # insert use_reentrant=False twice (a SyntaxError) and say "All checks passed".
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "block.py").write_text(MODEL)
    (tmp_path / "legacy_models").symlink_to("models")
    monkeypatch.chdir(tmp_path)
    result = _fix(tmp_path)
    text = (tmp_path / "models" / "block.py").read_text()
    assert text.count("use_reentrant=False") == 1 and "inplace=False" in text
    assert _compiles(tmp_path / "models" / "block.py")
    assert result.fixes is not None and result.fixes.failures == []
    assert result.fixes.changed_files == ["models/block.py"]
    assert result.findings == []
    assert _fix(tmp_path).fixes.applied == []  # type: ignore[union-attr]


def test_diff_through_a_linked_folder_shows_one_fix_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "block.py").write_text(MODEL)
    (tmp_path / "legacy_models").symlink_to("models")
    monkeypatch.chdir(tmp_path)
    settings = RunSettings(config=Config(root=str(tmp_path)), use_cache=False, jobs=1, diff=True, unsafe_fixes=True)
    result = run(["."], settings)
    assert (tmp_path / "models" / "block.py").read_text() == MODEL
    assert result.fixes is not None
    (diff,) = result.fixes.diffs
    assert diff.count("+    return checkpoint(block, x, use_reentrant=False)") == 1
    assert result.findings == []  # what would remain


def test_symlinked_file_is_not_replaced_by_a_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "real.py").write_text(MODEL)
    (tmp_path / "pkg" / "alias.py").symlink_to("real.py")
    monkeypatch.chdir(tmp_path)
    result = _fix(tmp_path)
    assert (tmp_path / "pkg" / "alias.py").is_symlink()
    assert os.readlink(tmp_path / "pkg" / "alias.py") == "real.py"
    assert (tmp_path / "pkg" / "real.py").read_text().count("use_reentrant=False") == 1
    assert result.fixes is not None and result.fixes.failures == [] and result.findings == []


def test_hard_linked_file_is_not_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # os.replace would give the checked name a new inode and leave the other
    # name (possibly outside the tree) with the old text.
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "m.py").write_text(MODEL)
    (tmp_path / "proj").mkdir()
    os.link(outside / "m.py", tmp_path / "proj" / "m.py")
    monkeypatch.chdir(tmp_path / "proj")
    result = _fix(tmp_path / "proj")
    assert (outside / "m.py").read_text() == MODEL
    assert os.path.samefile(outside / "m.py", tmp_path / "proj" / "m.py")
    assert result.fixes is not None
    ((path, why),) = result.fixes.failures
    assert path == "m.py" and "hard links" in why


def test_symlink_named_on_the_command_line_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "real.py").write_text(MODEL)
    (tmp_path / "link.py").symlink_to("real.py")
    monkeypatch.chdir(tmp_path)
    result = _fix(tmp_path, "link.py")
    assert (tmp_path / "link.py").is_symlink() and (tmp_path / "real.py").read_text() == MODEL
    assert result.fixes is not None
    ((path, why),) = result.fixes.failures
    assert path == "link.py" and "symbolic link" in why
    assert {f.code for f in result.findings} == {"CKP105", "CKP401"}  # still reported: exit 1


def test_linked_folder_outside_the_tree_is_not_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "ext.py").write_text(MODEL)
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "ext").symlink_to(outside)
    monkeypatch.chdir(proj)
    result = _fix(proj)
    assert (outside / "ext.py").read_text() == MODEL
    assert result.fixes is not None
    ((path, why),) = result.fixes.failures
    assert path == "ext/ext.py" and "outside the checked paths" in why


def test_read_only_file_is_reported_not_chmodded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.py"
    path.write_text(MODEL)
    path.chmod(0o444)
    monkeypatch.chdir(tmp_path)
    result = _fix(tmp_path)
    assert path.read_text() == MODEL and stat.S_IMODE(path.stat().st_mode) == 0o444
    assert result.fixes is not None
    ((shown, why),) = result.fixes.failures
    assert shown == "m.py" and "read-only" in why
    assert result.findings  # the findings stay


def _fix_with(path: Path, edit: Edit):  # type: ignore[no-untyped-def]
    """The fix loop on ``path`` with one finding carrying ``edit`` (as a forged cache entry would)."""
    finding = Finding("CKP101", "m", str(path), edit.start_line, 0, edit.start_line, 1,
                      fix=Fix("edit", "unsafe", (edit,)))
    _found, _hidden, report = fix_passes([str(path.parent)], [str(path)], unsafe=True, write=True, diff=False,
                                         lint=lambda overlay: ([finding], []))
    return report


@pytest.mark.parametrize(
    ("text", "edit", "reason"),
    [
        # libcst accepts a repeated keyword argument; compile() does not. A (forged
        # or stale) edit adding a keyword the call already has must write nothing.
        ("checkpoint(f, x, use_reentrant=False)\n", Edit(1, 36, 1, 36, ", use_reentrant=False"),
         "would not compile (keyword argument repeated"),
        # The original already fails compile() (newer syntax than this Python, or
        # broken): compile() cannot vouch for the fix, so nothing is written.
        ("def f():\n    pass\nreturn 1\nx.add_(1)\n", Edit(4, 0, 4, 0, "x = "), "cannot be verified"),
    ],
    ids=["repeated-keyword", "original-does-not-compile"],
)
def test_fix_that_compile_rejects_is_refused(tmp_path: Path, text: str, edit: Edit, reason: str) -> None:
    path = tmp_path / "m.py"
    path.write_text(text)
    report = _fix_with(path, edit)
    assert path.read_text() == text
    ((_, why),) = report.failures
    assert reason in why
    assert report.applied == [] and report.changed_files == []


def test_write_is_atomic_and_keeps_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.py"
    path.write_text("a = 1\n")
    path.chmod(0o640)
    src = read_source(str(path))

    def failing_replace(src_: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        write_source(str(path), type(src)("a = 2\n", src.encoding))
    assert path.read_text() == "a = 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["m.py"]  # no temp file left behind
    monkeypatch.undo()
    write_source(str(path), type(src)("a = 2\n", src.encoding))
    assert path.read_text() == "a = 2\n" and stat.S_IMODE(path.stat().st_mode) == 0o640


def test_file_changed_since_it_was_read_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text("a = 1\n")
    src = read_source(str(path))
    path.write_text("a = 3\n")
    with pytest.raises(StaleFileError):
        write_source(str(path), type(src)("a = 2\n", src.encoding), expected=src.text)
    assert path.read_text() == "a = 3\n"


# ----------------------------------------------------------------- the CLI


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "ckptlint", "check", *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=120,
    )


def test_unwritable_folder_gives_a_per_file_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Issue 11: "--fix in an unwritable folder: traceback, exit 2, no report".
    from ckptlint import atomic, cli

    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "m.py").write_text(MODEL)
    (tmp_path / "ok.py").write_text(MODEL)
    locked.chmod(0o555)
    if os.geteuid() == 0:
        # Root ignores permission bits; make the folder refuse new files the
        # way the kernel does for everyone else.
        real_mkstemp = atomic.tempfile.mkstemp

        def mkstemp(*args: object, **kw: object):  # type: ignore[no-untyped-def]
            if os.path.realpath(str(kw.get("dir"))) == os.path.realpath(locked):
                raise PermissionError(13, "Permission denied")
            return real_mkstemp(*args, **kw)  # type: ignore[arg-type]

        monkeypatch.setattr(atomic.tempfile, "mkstemp", mkstemp)
    monkeypatch.chdir(tmp_path)
    try:
        code = cli.main(["check", ".", "--fix", "--unsafe-fixes", "--no-cache", "--jobs", "1"])
    finally:
        locked.chmod(0o755)
    out, err = capsys.readouterr()
    assert (locked / "m.py").read_text() == MODEL
    assert (tmp_path / "ok.py").read_text().count("use_reentrant=False") == 1  # the rest is fixed
    assert "Traceback" not in err, err
    assert "locked/m.py: not fixed: cannot write it: Permission denied" in err, err
    assert "locked/m.py" in out and "CKP401" in out and "Fixed 2 findings in 1 file." in out
    assert code == 1  # documented: findings remain
    assert [p.name for p in locked.iterdir()] == ["m.py"]


def test_hostile_tree_leaves_outside_untouched_and_everything_compiling(tmp_path: Path) -> None:
    """Done when: ``--fix`` over a tree with every hostile case leaves every
    written file compiling and no file outside the roots changed."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "ext.py").write_text(MODEL)
    (outside / "target.py").write_text(MODEL)
    proj = tmp_path / "proj"
    (proj / "models").mkdir(parents=True)
    (proj / "models" / "block.py").write_text(MODEL)
    (proj / "models" / "other.py").write_text(MODEL.replace("block", "other"))
    (proj / "legacy_models").symlink_to("models")  # the same files twice
    (proj / "models" / "ext").symlink_to(outside)  # a folder outside the tree
    (proj / "models" / "link.py").symlink_to(outside / "target.py")  # a file outside the tree
    (proj / "models" / "alias.py").symlink_to("block.py")  # a file inside the tree
    (proj / "ro.py").write_text(MODEL)
    (proj / "ro.py").chmod(0o444)
    before = _hashes(outside)
    ro_before = (proj / "ro.py").read_bytes()

    proc = _cli(proj, ".", "--fix", "--unsafe-fixes", "--no-cache")
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1, proc.stderr  # the unfixable files keep their findings
    assert _hashes(outside) == before
    assert (proj / "ro.py").read_bytes() == ro_before
    assert stat.S_IMODE((proj / "ro.py").stat().st_mode) == 0o444
    for name in ("alias.py", "link.py", "ext"):
        assert (proj / "models" / name).is_symlink()
    for path in (proj / "models" / "block.py", proj / "models" / "other.py"):
        text = path.read_text()
        assert text.count("use_reentrant=False") == 1 and "inplace=False" in text
    for folder, _dirs, names in os.walk(proj):
        for name in names:
            p = Path(folder, name)
            if p.suffix == ".py" and p.exists():
                assert _compiles(p), p
    assert "ro.py: not fixed: the file is read-only" in proc.stderr
    assert "outside the checked paths" in proc.stderr
