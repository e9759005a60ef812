"""Ground truth for CKP404: the fixtures' DDP training steps, run with gloo on CPU in a subprocess."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
_STEP = """
import importlib.util, os, sys, torch, torch.distributed as dist
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[2])
dist.init_process_group("gloo", rank=0, world_size=1)
if sys.argv[1].endswith(".py"):
    spec = importlib.util.spec_from_file_location("fixture", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
else:  # a fixture package's training script, imported with its package
    sys.path.insert(0, sys.argv[3])
    module = importlib.import_module(sys.argv[1])
try:
    module.train_step(torch.randn(4, 8, requires_grad=True))
    print("TRAINED")
except RuntimeError as exc:
    print("RAISED", str(exc).splitlines()[0])
"""


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


@pytest.mark.parametrize(("fixture", "outcome"), [
    ("ddp_reentrant_find_unused.py", "RAISED Expected to mark a variable ready only once"),
    ("benign_ddp_static_graph.py", "TRAINED"),
    ("ddp_shared_layer_reentrant.py", "RAISED Expected to mark a variable ready only once"),
    ("benign_ddp_shared_layer_nonreentrant.py", "TRAINED"),
    ("ddp_tied_weights_training_script.train", "RAISED Expected to mark a variable ready only once"),
    ("benign_ddp_tied_weights_static_graph.train", "TRAINED"),
])
def test_ddp_step(fixture: str, outcome: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _STEP, str(FIXTURES / fixture) if fixture.endswith(".py") else fixture, _free_port(), str(FIXTURES)],
        capture_output=True, text=True, timeout=240,
    )
    assert outcome in proc.stdout, proc.stdout + proc.stderr
