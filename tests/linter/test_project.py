"""Project/ModuleInfo: lazy statements, positions, name resolution across files."""

from __future__ import annotations

import textwrap
from pathlib import Path

import libcst as cst
import pytest

from ckptlint.engine import lint
from ckptlint.project import ClassInfo, FunctionInfo, ModuleInfo, Project, decode_source


def _mod(source: str, name: str = "m") -> ModuleInfo:
    return ModuleInfo(f"{name}.py", source, name, ".", False)


def test_statements_parse_lazily_and_positions_are_file_lines() -> None:
    src = "import torch\n\n\n@dec\nclass A:\n  def f(self):\n    return 1\nx = 1; y = 2\n\x0c\ndef g():\n  pass\n"
    m = _mod(src)
    assert m.starts == [1, 4, 8, 10]
    assert m._stmts.count(None) == 4  # nothing parsed yet
    cls = m.defs["A"]
    assert isinstance(cls, cst.ClassDef) and m._stmts.count(None) == 3
    method = cls.body.body[0]
    ret = method.body.body[0].body[0]
    pos = m.position(ret)
    assert (pos.start.line, pos.start.column) == (7, 4)  # two-space indentation kept
    g = m.defs["g"]
    assert m.position(g).start.line == 10
    assert sorted(m.assigns) == ["x", "y"]
    assert isinstance(m.assigns["y"][0], cst.Integer)


def test_conditional_and_try_bindings_are_indexed() -> None:
    src = textwrap.dedent(
        """\
        try:
            from torch.utils.checkpoint import checkpoint as ck
        except ImportError:
            ck = None
        if True:
            def helper(x):
                return x
        """
    )
    m = _mod(src)
    assert m.imports["ck"] == ["torch.utils.checkpoint.checkpoint"]
    assert "ck" in m.assigns and "helper" in m.defs
    assert isinstance(m.defs["helper"], cst.FunctionDef)


def test_relative_imports_resolve_to_tree_classes(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .sub.blocks import Block\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "blocks.py").write_text("class Block:\n    def forward(self, x):\n        return x\n")
    (pkg / "model.py").write_text("from . import Block\nfrom .sub import blocks\n")
    files = [str(p) for p in pkg.rglob("*.py")]
    project = Project(files)
    model = project.module(str(pkg / "model.py"))
    assert model.name == "pkg.model"
    assert model.imports["Block"] == ["pkg.Block"]
    found = project.lookup("pkg.Block", model)
    assert isinstance(found, ClassInfo) and found.qualname == "pkg.sub.blocks.Block"
    method = project.lookup("pkg.sub.blocks.Block.forward", model)
    assert isinstance(method, FunctionInfo) and method.short == "Block.forward"


def test_single_file_reads_package_siblings_from_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "blocks.py").write_text("class Block:\n    def forward(self, x):\n        x.add_(1)\n        return x\n")
    (tmp_path / "pkg" / "model.py").write_text(
        "from torch.utils.checkpoint import checkpoint\nfrom .blocks import Block\n"
        "def run(x):\n    return checkpoint(Block(), x, use_reentrant=False)\n"
    )
    result = lint(["pkg/model.py"])
    assert [(f.path, f.code, f.line) for f in result.findings] == [("pkg/blocks.py", "CKP101", 3)]


def test_decode_source_honours_coding_cookie() -> None:
    assert decode_source("# -*- coding: latin-1 -*-\nx = 'é'\n".encode("latin-1")).endswith("x = 'é'\n")
    assert decode_source(b"\xef\xbb\xbfx = 1\n") == "x = 1\n"
    assert decode_source(b"x = '\xff'\n") == "x = '\ufffd'\n"


def test_trim_keeps_given_sources(tmp_path: Path) -> None:
    paths = []
    for i in range(3):
        p = tmp_path / f"m{i}.py"
        p.write_text("x = 1\n" * 10)
        paths.append(str(p))
    project = Project(paths, sources={paths[0]: "y = 2\n"})
    for p in paths:
        project.module(p)
    project.trim(max_source_bytes=1)
    assert project.read(paths[0]) == "y = 2\n"
    assert project.module(paths[0]).source == "y = 2\n"
