"""docs/runtime.md stays true: every python example runs, and the CLI example exits 0."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("hypothesis")

DOC = Path(__file__).resolve().parents[2] / "docs" / "runtime.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S) if DOC.exists() else []


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_python_example_runs(index: int) -> None:
    exec(compile(BLOCKS[index], f"{DOC}:block{index}", "exec"), {"__name__": f"doc_example_{index}"})


def test_cli_example_runs(tmp_path: Path) -> None:
    bash = [b for b in re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S) if "cat > /tmp/mymodel.py" in b]
    assert bash, "CLI example missing from docs/runtime.md"
    script = bash[0].replace("/tmp/mymodel.py", str(tmp_path / "mymodel.py"))
    script = script.replace("ckptlint verify", f"{sys.executable} -m ckptlint verify")
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=180, env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "EQUIVALENT on 5 example(s)" in proc.stdout
