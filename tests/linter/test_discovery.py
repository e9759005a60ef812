"""Discovery: which bodies run under checkpoint, and which parameters carry inputs."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ckptlint.discovery.sites import Discovery
from ckptlint.engine import EngineOptions, prepare_options
from ckptlint.project import Project


def discover(tmp_path: Path, files: dict[str, str], driver: str = "mod.py") -> tuple[list, list]:
    for rel, src in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(src))
    paths = [str(tmp_path / rel) for rel in files]
    project = Project(paths)
    options = prepare_options(project, EngineOptions())
    disc = Discovery(project, options.checkpoint_functions)
    return disc.discover(project.module(str(tmp_path / driver)))


def names(checked: list) -> set[tuple[str, tuple[str, ...]]]:
    return {(c.name, tuple(sorted(c.inputs))) for c in checked}


BLOCK = """
import torch.nn as nn
class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.fc = nn.Linear(d, d)
    def forward(self, x, mask=None, n: int = 2, flag=False):
        return self.fc(x)
"""


@pytest.mark.parametrize(
    "imports, call",
    [
        ("import torch.utils.checkpoint as cp", "cp.checkpoint"),
        ("from torch.utils import checkpoint as m", "m.checkpoint"),
        ("from torch.utils.checkpoint import checkpoint as ckpt", "ckpt"),
        ("import torch.utils.checkpoint", "torch.utils.checkpoint.checkpoint"),
        ("import torch", "torch.utils.checkpoint.checkpoint"),
    ],
)
def test_import_forms(tmp_path: Path, imports: str, call: str) -> None:
    src = f"""
{imports}
def f(x, y):
    return x * y
def run(a, b):
    return {call}(f, a, b, use_reentrant=False)
"""
    sites, checked = discover(tmp_path, {"mod.py": src})
    assert [s.kind for s in sites] == ["checkpoint"]
    assert names(checked) == {("f", ("x", "y"))}


def test_spelling_alone_is_not_enough(tmp_path: Path) -> None:
    src = """
def checkpoint(fn, *args):
    return fn(*args)
def f(x):
    return x
def run(a):
    return checkpoint(f, a)
"""
    sites, checked = discover(tmp_path, {"mod.py": src})
    assert sites == [] and checked == []


def test_bound_method_module_attr_modulelist_sequential(tmp_path: Path) -> None:
    src = BLOCK + """
from torch.utils.checkpoint import checkpoint
class Model(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.layer = Block(d)
        self.layers = nn.ModuleList([Block(d) for _ in range(2)])
        self.seq = nn.Sequential(Block(d), Block(d))
    def _inner(self, h):
        return h
    def forward(self, x):
        x = checkpoint(self._inner, x, use_reentrant=False)
        x = checkpoint(self.layer, x, use_reentrant=False)
        x = checkpoint(self.layer.__call__, x, None, use_reentrant=False)
        for blk in self.layers:
            x = checkpoint(blk, x, use_reentrant=False)
        for i, blk in enumerate(self.layers):
            x = checkpoint(blk, x, use_reentrant=False)
        return checkpoint(self.seq, x, use_reentrant=False)
"""
    _, checked = discover(tmp_path, {"mod.py": src})
    got = names(checked)
    assert ("Model._inner", ("h",)) in got
    # ``mask`` defaults to None and is not passed; ``n``/``flag`` are not tensors.
    assert ("Block.forward", ("x",)) in got
    # In a Sequential only the first module receives the checkpoint's input.
    assert ("Block.forward", ()) in got


def test_lambda_partial_and_factory(tmp_path: Path) -> None:
    src = BLOCK + """
import functools
from torch.utils.checkpoint import checkpoint
def f(x, y, scale):
    return x * y * scale
def create_custom_forward(module):
    def custom_forward(*inputs):
        return module(*inputs)
    return custom_forward
class Model(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.block = Block(d)
    def forward(self, x, y):
        a = checkpoint(lambda t: t * 2, x, use_reentrant=False)
        b = checkpoint(functools.partial(f, scale=None), x, y, use_reentrant=False)
        return checkpoint(create_custom_forward(self.block), a, b, use_reentrant=False)
"""
    _, checked = discover(tmp_path, {"mod.py": src})
    got = names(checked)
    assert ("Model.forward.<lambda>", ("t",)) in got
    assert ("f", ("x", "y")) in got  # partial(scale=None) nulls scale
    assert ("Block.forward", ("flag", "mask", "x")) in got or ("Block.forward", ("mask", "x")) in got


def test_gradient_checkpointing_func_and_partial_attr(tmp_path: Path) -> None:
    src = BLOCK + """
from functools import partial
from torch.utils.checkpoint import checkpoint
class Model(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.layers = nn.ModuleList([Block(d)])
        self.ckpt = partial(checkpoint, use_reentrant=False, preserve_rng_state=False)
    def forward(self, x, m):
        for layer in self.layers:
            x = self._gradient_checkpointing_func(layer.__call__, x, m)
            x = self.ckpt(layer, x)
        return x
"""
    sites, checked = discover(tmp_path, {"mod.py": src})
    assert [s.kind for s in sites].count("gc_func") == 2
    assert {c.preserve_rng_state for c in checked} == {True, False}


def test_checkpoint_sequential_segments(tmp_path: Path) -> None:
    src = """
import torch.nn as nn
from torch.utils.checkpoint import checkpoint_sequential
class A(nn.Module):
    def forward(self, x):
        return x
class B(nn.Module):
    def forward(self, x):
        return x
class C(nn.Module):
    def forward(self, x):
        return x
class D(nn.Module):
    def forward(self, x):
        return x
class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.seq = nn.Sequential(A(), B(), C(), D())
    def forward(self, x):
        x = checkpoint_sequential(self.seq, 1, x, use_reentrant=False)
        return checkpoint_sequential(self.seq, 2, x, use_reentrant=False)
"""
    _, checked = discover(tmp_path, {"mod.py": src})
    # 4 modules, 2 segments: [A, B] checkpointed (A starts it), [C, D] is the last segment.
    assert names(checked) == {("A.forward", ("x",)), ("B.forward", ())}


def test_timm_checkpoint_seq_and_reexported_checkpoint(tmp_path: Path) -> None:
    src = BLOCK + """
from timm.models._manipulate import checkpoint_seq, checkpoint
class Model(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.blocks = nn.Sequential(*[Block(d) for _ in range(3)])
        self.head = Block(d)
    def forward(self, x):
        x = checkpoint_seq(self.blocks, x)
        return checkpoint(self.head, x)
"""
    sites, checked = discover(tmp_path, {"mod.py": src})
    assert sorted(s.kind for s in sites) == ["checkpoint", "seq"]
    assert all(not s.torch_api for s in sites)
    assert {c.name for c in checked} == {"Block.forward"}


def test_checkpoint_wrapper_and_apply_activation_checkpointing(tmp_path: Path) -> None:
    src = BLOCK + """
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
    apply_activation_checkpointing, checkpoint_wrapper,
)
class Other(nn.Module):
    def forward(self, h):
        return h
class Model(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.block = checkpoint_wrapper(Block(d))
def setup(model):
    apply_activation_checkpointing(model, check_fn=lambda m: isinstance(m, Other))
"""
    _, checked = discover(tmp_path, {"mod.py": src})
    assert {c.name for c in checked} == {"Block.forward", "Other.forward"}
    assert {c.via for c in checked} == {"checkpoint_wrapper", "apply_activation_checkpointing"}


def test_gradient_checkpointing_layer_subclasses(tmp_path: Path) -> None:
    files = {
        "pkg/__init__.py": "",
        "pkg/base.py": """
from transformers.modeling_layers import GradientCheckpointingLayer
class DecoderLayer(GradientCheckpointingLayer):
    def forward(self, hidden_states, attention_mask=None, past_key_values=None, use_cache=False, layer_idx: int = 0):
        return hidden_states
""",
        "pkg/mod.py": """
from .base import DecoderLayer
class Derived(DecoderLayer):
    def forward(self, hidden_states, cache=None, layer_past=None, **kwargs):
        return hidden_states
""",
    }
    _, checked = discover(tmp_path, files, "pkg/base.py")
    # transformers 5.x's wrapper nulls cache/layer_past/use_cache, not past_key_values (issue 9).
    assert names(checked) == {("DecoderLayer.forward", ("attention_mask", "hidden_states", "past_key_values"))}
    _, checked = discover(tmp_path, files, "pkg/mod.py")
    assert names(checked) == {("Derived.forward", ("hidden_states", "kwargs"))}
    assert checked[0].via == "GradientCheckpointingLayer"


def test_cross_file_class_and_team_wrapper(tmp_path: Path) -> None:
    files = {
        "pkg/__init__.py": "",
        "pkg/blocks.py": BLOCK,
        "pkg/utils.py": """
from torch.utils.checkpoint import checkpoint
def my_ckpt(fn, *args):
    return checkpoint(fn, *args, use_reentrant=False)
""",
        "pkg/model.py": """
import torch.nn as nn
from pkg.blocks import Block
from .utils import my_ckpt
class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block(4)
    def forward(self, x):
        return my_ckpt(self.block, x)
""",
    }
    sites, checked = discover(tmp_path, files, "pkg/model.py")
    assert [s.kind for s in sites] == ["checkpoint"]
    assert names(checked) == {("Block.forward", ("x",))}
    assert checked[0].ref.module.path.endswith("blocks.py")


def test_namespace_modules_taming_style(tmp_path: Path) -> None:
    src = BLOCK + """
class Encoder(nn.Module):
    def __init__(self, d, levels):
        super().__init__()
        self.mid = nn.Module()
        self.mid.block_1 = Block(d)
        self.down = nn.ModuleList()
        for _ in range(levels):
            block = nn.ModuleList()
            block.append(Block(d))
            down = nn.Module()
            down.block = block
            self.down.append(down)
    def forward(self, h, temb):
        for i in range(2):
            h = self._gradient_checkpointing_func(self.down[i].block[0], h, temb)
        return self._gradient_checkpointing_func(self.mid.block_1, h, temb)
"""
    sites, checked = discover(tmp_path, {"mod.py": src})
    assert len(sites) == 2
    assert names(checked) == {("Block.forward", ("mask", "x"))}


def test_policies_name_the_checkpointed_classes(tmp_path: Path) -> None:
    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "shape_checkpoint_policies.py"
    sites, checked = discover(tmp_path, {"mod.py": fixture.read_text()})
    assert {c.name for c in checked} == {"ConvLayer.forward", "MixerLayer.forward", "DecoderLayer.forward"}
    assert len(sites) == 4
