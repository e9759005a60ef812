"""End to end: a real LSP client (pytest-lsp) talks to ``ckptlint server`` over stdio."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

pytest_lsp = pytest.importorskip("pytest_lsp", reason="the LSP tests need pytest-lsp (pip install -e '.[test,lsp]')")
pytest.importorskip("pygls", reason="the language server needs the lsp extra (pip install -e '.[lsp]')")

from lsprotocol import types  # noqa: E402
from pytest_lsp import ClientServerConfig, LanguageClient  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}

pytestmark = pytest.mark.asyncio

BLOCKS = '''\
import torch
from torch import nn


class Block(nn.Module):
    def forward(self, x):
        x.add_(1)
        return x * 2
'''

MODEL = '''\
from torch import nn
from torch.utils.checkpoint import checkpoint

from blocks import Block


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()

    def forward(self, x):
        return checkpoint(self.block, x, use_reentrant=False)
'''

# CKP105 has a safe fix (inplace=False); the function is checkpointed in the same file.
SAFE = '''\
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def act(x):
    return F.relu(x, inplace=True)


def run(x):
    return checkpoint(act, x, use_reentrant=False)
'''


@pytest_lsp.fixture(
    config=ClientServerConfig(server_command=[sys.executable, "-m", "ckptlint", "server"], server_env=ENV)
)
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(
        types.InitializeParams(capabilities=types.ClientCapabilities(), root_uri=None)
    )
    yield
    await lsp_client.shutdown_session()


def _uri(path: Path) -> str:
    return path.resolve().as_uri()


def _open(client: LanguageClient, path: Path, text: str | None = None, version: int = 1) -> None:
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            types.TextDocumentItem(uri=_uri(path), language_id="python", version=version,
                                   text=path.read_text() if text is None else text)
        )
    )


def _change(client: LanguageClient, path: Path, text: str, version: int) -> None:
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=_uri(path), version=version),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)],
        )
    )


async def _until(client: LanguageClient, path: Path, ok: Callable[[list[types.Diagnostic]], bool],
                 timeout: float = 30.0) -> list[types.Diagnostic]:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        got = client.diagnostics.get(_uri(path))
        if got is not None and ok(got):
            return got
        if loop.time() > end:
            raise AssertionError(f"no matching diagnostics for {path.name}; last: {got!r}")
        await asyncio.sleep(0.05)


def _codes(diags: list[types.Diagnostic]) -> list[str]:
    return sorted(str(d.code) for d in diags)


def _apply(text: str, edits: list[types.TextEdit]) -> str:
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))

    def offset(p: types.Position) -> int:
        return starts[p.line] + p.character  # ASCII sources: code units == characters

    # Last edit first, so that the offsets of the earlier ones stay valid.
    for e in sorted(edits, key=lambda e: (e.range.start.line, e.range.start.character), reverse=True):
        text = text[: offset(e.range.start)] + e.new_text + text[offset(e.range.end):]
    return text


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text("[tool.ckptlint]\n")
    (tmp_path / "blocks.py").write_text(BLOCKS)
    (tmp_path / "model.py").write_text(MODEL)
    return tmp_path


async def test_diagnostics_appear_on_open_and_clear_after_the_fixing_change(client: LanguageClient, project: Path):
    blocks = project / "blocks.py"
    _open(client, blocks)
    diags = await _until(client, blocks, lambda d: bool(d))
    assert _codes(diags) == ["CKP101"]
    (d,) = diags
    assert (d.range.start.line, d.range.start.character) == (6, 8)  # x.add_(1), 0-based
    assert d.source == "ckptlint"
    assert d.code_description is not None and "ckp101" in d.code_description.href
    _change(client, blocks, BLOCKS.replace("x.add_(1)", "x = x.add(1)"), version=2)
    assert not await _until(client, blocks, lambda d: not d)


async def test_cross_file_editing_the_checkpointing_file_rechecks_the_block(client: LanguageClient, project: Path):
    blocks, model = project / "blocks.py", project / "model.py"
    _open(client, blocks)
    _open(client, model)
    await _until(client, blocks, lambda d: _codes(d) == ["CKP101"])
    # An unsaved edit of model.py stops checkpointing Block: blocks.py is clean now.
    _change(client, model, MODEL.replace("checkpoint(self.block, x, use_reentrant=False)", "self.block(x)"), 2)
    await _until(client, blocks, lambda d: not d)
    # ...and checkpointing it again (still unsaved) brings the finding back.
    _change(client, model, MODEL, 3)
    await _until(client, blocks, lambda d: _codes(d) == ["CKP101"])


async def test_code_action_applies_the_same_edit_as_fix(client: LanguageClient, tmp_path: Path):
    path = tmp_path / "act.py"
    path.write_text(SAFE)
    _open(client, path)
    (diag,) = await _until(client, path, lambda d: bool(d))
    assert diag.code == "CKP105"
    actions = await client.text_document_code_action_async(
        types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(_uri(path)),
            range=diag.range,
            context=types.CodeActionContext(diagnostics=[diag]),
        )
    )
    quick = [a for a in actions if a.kind == types.CodeActionKind.QuickFix]
    assert len(quick) == 1 and quick[0].is_preferred
    edited = _apply(SAFE, quick[0].edit.changes[_uri(path)])
    fix_all = [a for a in actions if a.kind == "source.fixAll.ckptlint"]
    assert _apply(SAFE, fix_all[0].edit.changes[_uri(path)]) == edited

    copy = tmp_path / "cli" / "act.py"
    copy.parent.mkdir()
    copy.write_text(SAFE)
    subprocess.run([sys.executable, "-m", "ckptlint", "check", "--fix", "--no-cache", str(copy)],
                   env=ENV, capture_output=True, check=False)
    assert edited == copy.read_text()
    assert "inplace=False" in edited


async def test_hover_shows_the_rule_documentation(client: LanguageClient, project: Path):
    blocks = project / "blocks.py"
    _open(client, blocks)
    (diag,) = await _until(client, blocks, lambda d: bool(d))
    hover = await client.text_document_hover_async(
        types.HoverParams(types.TextDocumentIdentifier(_uri(blocks)), diag.range.start)
    )
    assert hover is not None and "CKP101" in hover.contents.value
    assert "checkpoint" in hover.contents.value.lower()


async def test_survives_a_file_that_does_not_parse_and_a_deleted_file(client: LanguageClient, project: Path):
    blocks, model = project / "blocks.py", project / "model.py"
    _open(client, model)
    _open(client, blocks)
    await _until(client, blocks, lambda d: _codes(d) == ["CKP101"])
    _change(client, blocks, "class Block(:\n", 2)
    await _until(client, blocks, lambda d: _codes(d) == ["CKP001"])
    _change(client, blocks, BLOCKS, 3)
    await _until(client, blocks, lambda d: _codes(d) == ["CKP101"])

    # blocks.py disappears from disk and from the editor; model.py is still served.
    client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(_uri(blocks))))
    blocks.unlink()
    client.workspace_did_change_watched_files(
        types.DidChangeWatchedFilesParams([types.FileEvent(_uri(blocks), types.FileChangeType.Deleted)])
    )
    await _until(client, blocks, lambda d: not d)
    _change(client, model, MODEL.replace("use_reentrant=False", "use_reentrant=False, preserve_rng_state=False")
            + "\nimport random\n\ndef f(x):\n    return x * random.random()\n\n"
            "def g(x):\n    return checkpoint(f, x, use_reentrant=False)\n", 2)
    diags = await _until(client, model, lambda d: bool(d))
    assert "CKP301" in _codes(diags)
    # The open file's own folder deleted too: still no crash, still answers.
    model.unlink()
    _change(client, model, MODEL + "\n", 3)
    hover = await client.text_document_hover_async(
        types.HoverParams(types.TextDocumentIdentifier(_uri(model)), types.Position(0, 0))
    )
    assert hover is None or hover.contents is not None


async def test_the_projects_configuration_applies(client: LanguageClient, tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text('[tool.ckptlint]\nignore = ["CKP401"]\n')
    path = tmp_path / "act.py"
    path.write_text(SAFE.replace(", use_reentrant=False", ""))  # CKP105 and CKP401 in one file
    _open(client, path)
    diags = await _until(client, path, lambda d: bool(d))
    assert _codes(diags) == ["CKP105"]
