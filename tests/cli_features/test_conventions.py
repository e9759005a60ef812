"""The command-line conventions ckptlint shares with ruff: one test per convention (docs/cli.md)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ckptlint.cli import main

ROOT = Path(__file__).resolve().parents[2]

# CKP105 has a safe fix, CKP401 an unsafe one.
SOURCE = textwrap.dedent(
    """\
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint


    def act(x):
        return F.relu(x, inplace=True)


    def run(x):
        return checkpoint(act, x)
    """
)
UNSAFE_ONLY = SOURCE.replace("inplace=True", "inplace=False")


def _run(capsys: pytest.CaptureFixture[str], *argv: str, stdin: str | None = None,
         monkeypatch: pytest.MonkeyPatch | None = None) -> tuple[int, str, str]:
    if stdin is not None:
        assert monkeypatch is not None
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode())))
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def proj(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("NO_COLOR", "FORCE_COLOR", "CKPTLINT_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "pyproject.toml").write_text(
        '[tool.ckptlint]\n[tool.ckptlint.per-file-ignores]\n"legacy/*.py" = ["CKP401"]\n'
    )
    (tmp_path / "m.py").write_text(SOURCE)
    return tmp_path


def test_stdin_with_stdin_filename_uses_its_config_and_per_file_ignores(proj, capsys, monkeypatch):
    (proj / "sub").mkdir()
    monkeypatch.chdir(proj / "sub")  # the config is found from the stdin filename, not the cwd
    code, out, _ = _run(capsys, "check", "-", "--stdin-filename", "../legacy/new.py", "--no-cache",
                        "--output-format", "concise", stdin=SOURCE, monkeypatch=monkeypatch)
    assert code == 1
    assert out.splitlines()[0].startswith("../legacy/new.py:6:12: CKP105 [*] ")
    assert "CKP401" not in out  # per-file-ignores matched the stdin filename


def test_stdin_resolves_package_siblings_on_disk(proj, capsys, monkeypatch):
    pkg = proj / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "blocks.py").write_text("from torch import nn\n\nclass Block(nn.Module):\n    def forward(self, x):\n"
                                   "        x.mul_(2)\n        return x\n")
    model = ("from torch.utils.checkpoint import checkpoint\nfrom .blocks import Block\n\n"
             "def run(x):\n    return checkpoint(Block(), x, use_reentrant=False)\n")
    code, out, _ = _run(capsys, "check", "-", "--stdin-filename", "pkg/model.py", "--no-cache",
                        "--output-format", "concise", stdin=model, monkeypatch=monkeypatch)
    assert code == 1 and out.startswith("pkg/blocks.py:5:9: CKP101 ")


def test_stdin_fix_prints_the_fixed_source_and_reports_on_stderr(proj, capsys, monkeypatch):
    code, out, err = _run(capsys, "check", "-", "--fix", "--stdin-filename", "m2.py", "--no-cache",
                          stdin=SOURCE, monkeypatch=monkeypatch)
    assert out == SOURCE.replace("inplace=True", "inplace=False")
    assert "CKP401" in err and "Fixed 1 finding" in err
    assert code == 1
    assert not (proj / "m2.py").exists()
    code, out, err = _run(capsys, "check", "-", "--diff", "--stdin-filename", "m.py", "--no-cache",
                          stdin=SOURCE, monkeypatch=monkeypatch)
    assert code == 1 and out.startswith("--- ") and "+    return F.relu(x, inplace=False)\n" in out
    assert (proj / "m.py").read_text() == SOURCE


def test_stdin_filename_excluded_by_config_is_not_checked(proj, capsys, monkeypatch):
    (proj / "pyproject.toml").write_text('[tool.ckptlint]\nextend-exclude = ["vendored"]\n')
    code, out, err = _run(capsys, "check", "-", "--stdin-filename", "vendored/m.py", "--no-cache",
                          stdin=SOURCE, monkeypatch=monkeypatch)
    assert (code, err) == (0, "") and "CKP105" not in out


def test_concise_is_one_line_per_finding_and_text_is_full(proj, capsys):
    code, out, _ = _run(capsys, "check", "m.py", "--no-cache", "--output-format", "concise")
    lines = out.splitlines()
    assert code == 1
    assert [line.split()[1] for line in lines[:2]] == ["CKP105", "CKP401"]
    assert lines[2] == "Found 2 findings (1 file checked)."
    _, full, _ = _run(capsys, "check", "m.py", "--no-cache", "--output-format", "full")
    _, text, _ = _run(capsys, "check", "m.py", "--no-cache", "--format", "text")
    assert full == text and "^^^" in full


def test_quiet_prints_findings_only_and_silent_nothing(proj, capsys):
    code, out, _ = _run(capsys, "check", "m.py", "--no-cache", "--output-format", "concise", "-q")
    assert code == 1 and len(out.splitlines()) == 2 and "Found" not in out
    code, out, err = _run(capsys, "check", "m.py", "--no-cache", "-s")
    assert (code, out, err) == (1, "", "")
    code, out, err = _run(capsys, "check", "m.py", "--no-cache", "--diff", "-s")
    assert (code, out, err) == (1, "", "")
    code, out, err = _run(capsys, "check", "m.py", "--no-cache", "--diff", "-q")
    assert code == 1 and out.startswith("---") and err == ""


def test_show_settings_and_show_files(proj, capsys):
    (proj / "notes.txt").write_text("")
    code, out, _ = _run(capsys, "check", ".", "--show-settings", "--extend-select", "CKP002")
    assert code == 0
    assert str(proj / "pyproject.toml") in out and "CKP002" in out and "legacy/*.py = CKP401" in out
    code, out, _ = _run(capsys, "check", ".", "--show-files")
    assert (code, out) == (0, "m.py\n")


def test_cache_dir_and_clean(proj, capsys, tmp_path_factory):
    cache = tmp_path_factory.mktemp("elsewhere") / "cache"
    _run(capsys, "check", "m.py", "--cache-dir", str(cache))
    assert (cache / "CACHEDIR.TAG").is_file() and not (proj / ".ckptlint_cache").exists()
    code, _, err = _run(capsys, "clean", "--cache-dir", str(cache))
    assert code == 0 and not cache.exists() and "Removing cache at" in err
    # The default location, found from the project's configuration.
    _run(capsys, "check", "m.py")
    assert (proj / ".ckptlint_cache").is_dir()
    assert _run(capsys, "clean", "-q") == (0, "", "")
    assert not (proj / ".ckptlint_cache").exists()
    # A folder ckptlint did not create is never removed.
    code, _, err = _run(capsys, "clean", "--cache-dir", str(proj))
    assert code == 2 and "not a ckptlint cache" in err and (proj / "m.py").exists()


def test_fixable_marker_and_closing_hint(proj, capsys):
    _, out, _ = _run(capsys, "check", "m.py", "--no-cache")
    assert "CKP105 [*] F.relu" in out and "CKP401 checkpoint()" in out  # unsafe: no marker
    assert out.splitlines()[-1] == "[*] 1 fixable with --fix (1 more with --unsafe-fixes)."
    _, out, _ = _run(capsys, "check", "m.py", "--no-cache", "--unsafe-fixes", "--diff")
    assert out.startswith("---")


def test_fix_with_only_unsafe_fixes_says_so(proj, capsys):
    (proj / "m.py").write_text(UNSAFE_ONLY)
    code, out, _ = _run(capsys, "check", "m.py", "--no-cache", "--fix")
    assert code == 1 and (proj / "m.py").read_text() == UNSAFE_ONLY
    assert "Fixed 0 findings in 0 files. 1 finding has only an unsafe fix" in out
    assert "rerun with --unsafe-fixes" in out


def test_short_version_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["-V"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("ckptlint ")


def test_force_color_and_no_color(proj, capsys, monkeypatch):
    monkeypatch.setenv("FORCE_COLOR", "1")
    _, out, _ = _run(capsys, "check", "m.py", "--no-cache")
    assert "\x1b[" in out  # capsys is not a terminal
    monkeypatch.setenv("NO_COLOR", "1")
    _, out, _ = _run(capsys, "check", "m.py", "--no-cache")
    assert "\x1b[" not in out


def test_rule_all_as_json(capsys):
    code, out, _ = _run(capsys, "rule", "--all", "--output-format", "json")
    rules = json.loads(out)
    assert code == 0
    codes = [r["code"] for r in rules]
    assert codes == sorted(codes) and {"CKP001", "CKP002", "CKP101", "CKP401"} <= set(codes)
    assert all(r["name"] and r["explanation"].startswith(r["code"]) for r in rules)


def test_no_python_files_warns_and_exits_zero(tmp_path, capsys):
    (tmp_path / "README.txt").write_text("")
    code, out, err = _run(capsys, "check", str(tmp_path))
    assert (code, out) == (0, "")
    assert err.strip() == f"ckptlint: warning: no Python files found under {str(tmp_path)!r}"


def test_ctrl_c_ends_check_with_one_line_and_130(tmp_path):
    # Enough files that a two-worker pool is busy when the signal arrives.
    for i in range(400):
        (tmp_path / f"m{i}.py").write_text(SOURCE + "".join(f"\ndef h{j}(x):\n    return checkpoint(act, x)\n"
                                                            for j in range(30)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "ckptlint", "check", str(tmp_path), "--no-cache", "-j", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
    time.sleep(2.0)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.decode() == "ckptlint: interrupted\n"
