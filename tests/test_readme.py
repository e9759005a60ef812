"""README.md is generated from docs/ and names the test command CI runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_is_built_from_docs() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "build_readme.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)```", quick_start, flags=re.S)
    test_command = commands[-1].strip()
    assert test_command == "python -m pytest -q"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert any(line.strip() == test_command for line in ci.splitlines())


def test_readme_examples_path_exists() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "ckptlint check examples/" in readme
    assert (ROOT / "examples" / "hazards").is_dir()
    assert (ROOT / "examples" / "clean_model.py").is_file()
