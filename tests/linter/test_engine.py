"""Engine API: prefilter, analyze_file purity and dependencies, errors, positions, fixes."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import libcst as cst
import pytest

import ckptlint.engine as engine
from ckptlint.engine import EngineOptions, FileResult, Project, analyze_file, lint, may_reach_checkpoint

MODEL = """
import torch.nn as nn
from torch.utils.checkpoint import checkpoint
from .blocks import Block

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()

    def forward(self, x):
        return checkpoint(self.block, x, use_reentrant=False)
"""
BLOCKS = """
import torch.nn as nn

class Block(nn.Module):
    def forward(self, x):
        x.add_(1)
        return x
"""


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, src in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(src))


def test_prefilter_triggers() -> None:
    o = EngineOptions()
    assert may_reach_checkpoint("from torch.utils.checkpoint import checkpoint as ck\n", o)
    assert may_reach_checkpoint("class L(GradientCheckpointingLayer): pass\n", o)
    assert may_reach_checkpoint("x = checkpoint_seq(self.blocks, x)\n", o)
    assert may_reach_checkpoint("h = self._gradient_checkpointing_func(l.__call__, h)\n", o)
    assert not may_reach_checkpoint('"""Load a pretrained checkpoint."""\nload_checkpoint(m, p)\n', o)
    assert not may_reach_checkpoint("import torch\nx = torch.ones(3)\n", o)
    custom = EngineOptions(checkpoint_functions=("deepspeed.checkpointing.remat",))
    assert may_reach_checkpoint("y = remat(f, x)\n", custom)
    assert not may_reach_checkpoint("# remat is mentioned only here\n", custom)


def test_prefilter_substring_gate_holds_for_every_trigger() -> None:
    """``may_reach_checkpoint`` skips its regex when neither literal is in the text: every trigger must hold one."""
    from ckptlint.engine import _TRIGGERS

    for trigger in _TRIGGERS:
        assert "heckpoint" in trigger or "find_unused_parameters" in trigger, trigger
    assert may_reach_checkpoint("ddp = DDP(model, find_unused_parameters=True)\n", EngineOptions())


def test_literal_triggers_are_exactly_what_the_regex_matches() -> None:
    """Each literal answered by a substring test is one the trigger regex matches on its own."""
    from ckptlint.engine import _BASE_PREFILTER, _LITERAL_TRIGGERS

    for literal in _LITERAL_TRIGGERS:
        assert _BASE_PREFILTER.search(f"x = {literal}\n") is not None, literal


def test_windowed_prefilter_agrees_with_the_whole_text_regex() -> None:
    """The prefilter runs its regex only around occurrences of "checkpoint": the same verdicts as one
    search over the whole text, on every fixture and on texts built to straddle the windows."""
    from ckptlint.engine import _BASE_PREFILTER

    fixtures = Path(__file__).resolve().parents[1] / "fixtures"
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in sorted(fixtures.rglob("*.py"))]
    texts += [
        "x" * 500 + "checkpoint  (", "mycheckpoint(x)", "a checkpoint b " * 100 + "from torch.utils import checkpoint",
        "checkpoint " * 60 + "checkpoint_seq(", "import    checkpoint", "# checkpoint\n" * 30 + "self.gradient_checkpointing_enable()",
        "checkpoint" + " " * 150 + "\n" + "y = checkpoint_sequential(m, 2, x)",
    ]
    for text in texts:
        whole = ("heckpoint" in text or "find_unused_parameters" in text) and _BASE_PREFILTER.search(text) is not None
        assert may_reach_checkpoint(text, EngineOptions()) == whole, text[:80]


def test_call_gates_hold_for_every_regex_match() -> None:
    """The wrapper scan's substring gate passes every text its call regex matches (and the DDP and
    monkeypatch gates every text their regexes match), so the gates change no verdict."""
    import re

    from ckptlint.discovery import patches, wrappers
    from ckptlint.rules import _ddp_scope

    call_re = re.compile(r"\b(?:checkpoint|checkpoint_sequential|_gradient_checkpointing_func)\s*\(")
    for text in ("checkpoint(f, x)", "checkpoint_sequential (m, 2, x)", "self._gradient_checkpointing_func(\n  f)",
                 "checkpoint\t(f)", "y = ckpt(x)"):
        gated = any(needle in text for needle in wrappers._CALL_NEEDLES)
        assert gated or call_re.search(text) is None, text
    for text in ("DDP(model)", "DistributedDataParallel (m)", "Trainer(strategy='ddp')", "DDPStrategy(x)", "nothing here"):
        assert _ddp_scope.mentions_ddp_wrap(text) == (_ddp_scope._TEXT.search(text) is not None), text
    for text in ("torch.utils.checkpoint.checkpoint = f", "checkpoint=partial(g)", "x = checkpoint(f)", "cp.checkpoint\t= f"):
        assert patches.mentions_patch(text) == (patches._LINE.search(text) is not None), text


def test_cross_file_finding_and_dependencies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, {"pkg/__init__.py": "", "pkg/model.py": MODEL, "pkg/blocks.py": BLOCKS})
    files = ["pkg/__init__.py", "pkg/blocks.py", "pkg/model.py"]
    result = analyze_file(Project(files), "pkg/model.py", EngineOptions())
    assert isinstance(result, FileResult) and result.error is None
    [f] = result.findings
    assert (f.code, f.path, f.line, f.column) == ("CKP101", "pkg/blocks.py", 6, 8)
    assert f.callable == "Block.forward"
    assert f.checkpoint_site is not None and (f.checkpoint_site.path, f.checkpoint_site.line) == ("pkg/model.py", 12)
    assert f.statement_lines == (6, 6)
    assert os.path.normpath("pkg/blocks.py") in result.dependencies
    assert os.path.normpath("pkg/model.py") not in result.dependencies
    # The blocks file alone has no checkpoint site: nothing to report from it.
    assert analyze_file(Project(files), "pkg/blocks.py", EngineOptions()).findings == ()


def test_internal_error_is_reported_and_others_still_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, {"a.py": MODEL.replace("from .blocks import Block", "") + BLOCKS, "b.py": MODEL.replace("from .blocks import Block", "") + BLOCKS})
    real = engine._FileAnalysis.run

    def boom(self: engine._FileAnalysis) -> None:
        if self.path.endswith("a.py"):
            raise RuntimeError("kaboom")
        real(self)

    monkeypatch.setattr(engine._FileAnalysis, "run", boom)
    result = lint(["."])
    assert [p for p, _ in result.errors] == ["a.py"]
    assert "RuntimeError: kaboom" in result.errors[0][1] and "Traceback" in result.errors[0][1]
    assert {f.path for f in result.findings} == {"b.py"}


def test_syntax_error_is_a_finding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, {"bad_site.py": "from torch.utils.checkpoint import checkpoint\ndef f(x:\n    pass\n", "bad_plain.py": "x = (1,\n"})
    result = lint(["."])
    assert not result.errors
    got = sorted((f.path, f.code, f.line) for f in result.findings)
    assert got == [("bad_plain.py", "CKP001", 1), ("bad_site.py", "CKP001", 2)]
    assert all(f.message.startswith("syntax error: ") for f in result.findings)


def test_duplicate_hazard_reported_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    src = BLOCKS + """
from torch.utils.checkpoint import checkpoint
class A(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()
    def forward(self, x):
        return checkpoint(self.block, x, use_reentrant=False)
class B(A):
    def forward(self, x):
        return checkpoint(self.block, x, use_reentrant=False)
"""
    _write(tmp_path, {"m.py": src})
    result = lint(["."])
    assert [(f.code, f.line) for f in result.findings] == [("CKP101", 6)]


def test_deterministic_across_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, {"pkg/__init__.py": "", "pkg/model.py": MODEL, "pkg/blocks.py": BLOCKS})
    first = lint(["."]).findings
    assert first == lint(["."]).findings


@pytest.mark.parametrize(
    ("code", "src", "expected"),
    [
        ("CKP105", "F.relu(x, inplace=True)", "F.relu(x, inplace=False)"),
        ("CKP101", "x.add_(1)", "x = x.add(1)"),
        ("CKP102", "x *= y + 1", "x = x * (y + 1)"),
    ],
)
def test_fix_edits_replace_exact_ranges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: str, src: str, expected: str) -> None:
    monkeypatch.chdir(tmp_path)
    text = f"""
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

def block(x, y):
    {src}
    return x

def run(x, y):
    return checkpoint(block, x, y, use_reentrant=False)
"""
    _write(tmp_path, {"m.py": text})
    [f] = [f for f in lint(["."]).findings if f.code == code]
    assert f.fix is not None
    fixed = _apply(textwrap.dedent(text), f.fix.edits)
    assert expected in fixed
    cst.parse_module(fixed)


def test_use_reentrant_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    text = "from torch.utils.checkpoint import checkpoint\ndef f(x):\n    return x\ny = checkpoint(\n    f,\n    1,\n)\nz = checkpoint(f, 2)\nw = checkpoint(f, 3, **{})\n"
    _write(tmp_path, {"m.py": text})
    findings = [f for f in lint(["."]).findings if f.code == "CKP401"]
    assert [f.line for f in findings] == [4, 8]
    fixed = text
    for f in sorted(findings, key=lambda f: -f.line):
        assert f.fix is not None and f.fix.applicability == "unsafe"
        fixed = _apply(fixed, f.fix.edits)
    assert "checkpoint(f, 2, use_reentrant=False)" in fixed
    assert "    1,\n    use_reentrant=False,\n)" in fixed or "1, use_reentrant=False," in fixed
    assert "checkpoint(f, 3, **{})" in fixed
    cst.parse_module(fixed)


def _apply(text: str, edits) -> str:
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    for e in sorted(edits, key=lambda e: (e.start_line, e.start_column), reverse=True):
        start = offsets[e.start_line - 1] + e.start_column
        end = offsets[e.end_line - 1] + e.end_column
        text = text[:start] + e.replacement + text[end:]
    return text


def test_configured_checkpoint_function(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    src = """
import teamlib
import torch.nn as nn

class Block(nn.Module):
    def forward(self, x):
        x.mul_(2)
        return x

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()

    def forward(self, x):
        return teamlib.memory.recompute(self.block, x)
"""
    _write(tmp_path, {"m.py": src})
    assert lint(["."]).findings == ()
    options = EngineOptions(checkpoint_functions=("teamlib.memory.recompute",))
    found = lint(["."], options).findings
    # Configured functions are not torch's: no CKP401 for the missing use_reentrant.
    assert [(f.code, f.line, f.callable) for f in found] == [("CKP101", 7, "Block.forward")]
