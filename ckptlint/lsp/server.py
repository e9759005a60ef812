"""``ckptlint server``: the language server (pygls), speaking LSP over stdio.

Diagnostics on open, change and save; quick fixes for each finding's fix
(safe ones preferred, unsafe ones labelled); "fix all" as a source action;
the rule's documentation on hover and as the diagnostic's link. The checking
itself is :func:`ckptlint.lsp.session.check_documents`.
"""

from __future__ import annotations

import asyncio
import os
from typing import Iterable

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.uris import from_fs_path, to_fs_path
from pygls.workspace import TextDocument
from pygls.workspace.position_codec import ServerTextPosition, ServerTextRange

from ckptlint import __version__
from ckptlint.lsp.session import check_documents, fix_all
from ckptlint.types import Edit, Finding

__all__ = ["CkptlintServer", "serve"]

SOURCE = "ckptlint"
REPOSITORY = "https://github.com/ckptlint/ckptlint"
# Typing fast re-checks once, after the pause.
DEBOUNCE_S = 0.15
FIX_ALL = "source.fixAll.ckptlint"


def _rule_module(code: str) -> object | None:
    from ckptlint import suppressions
    from ckptlint.rules import RULES_BY_CODE

    return {**RULES_BY_CODE, suppressions.CODE: suppressions}.get(code)


def rule_link(code: str) -> str | None:
    """Where a rule's documentation lives: its module, whose docstring ``ckptlint rule`` prints."""
    module = _rule_module(code)
    if module is None:
        return None
    return f"{REPOSITORY}/blob/main/{module.__name__.replace('.', '/')}.py"


def rule_markdown(code: str) -> str | None:
    from ckptlint.rules import rule_doc

    module = _rule_module(code)
    if module is None:
        return None
    return f"**{module.CODE}** ({module.NAME})\n\n{rule_doc(module)}"  # type: ignore[attr-defined]


class CkptlintServer(LanguageServer):
    """The server and what it last found, per open document."""

    def __init__(self) -> None:
        super().__init__("ckptlint", __version__)
        self.findings: dict[str, tuple[Finding, ...]] = {}  # absolute path -> findings
        self.published: set[str] = set()  # URIs holding diagnostics now
        self._pending: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    # -- checking ------------------------------------------------------------

    def open_documents(self) -> dict[str, str]:
        docs: dict[str, str] = {}
        for uri, doc in self.workspace.text_documents.items():
            path = to_fs_path(uri)
            if path and path.endswith((".py", ".pyi")):
                docs[os.path.abspath(path)] = doc.source
        return docs

    def schedule(self) -> None:
        if self._pending is not None and not self._pending.done():
            self._pending.cancel()
        self._pending = asyncio.ensure_future(self._check_later())

    async def _check_later(self) -> None:
        await asyncio.sleep(DEBOUNCE_S)
        async with self._lock:
            docs = self.open_documents()
            outcome = await asyncio.to_thread(check_documents, docs)
            # Buffers changed while checking: the next scheduled check wins.
            if docs != self.open_documents():
                return
        for problem in outcome.problems:
            self.window_log_message(types.LogMessageParams(types.MessageType.Warning, problem))
        self.findings = {p: outcome.findings.get(p, ()) for p in docs}
        self.publish()

    def publish(self) -> None:
        now: set[str] = set()
        for path, findings in sorted(self.findings.items()):
            uri = from_fs_path(path)
            if uri is None:
                continue
            doc = self.workspace.get_text_document(uri)
            diagnostics = [diagnostic(doc, f) for f in findings]
            if diagnostics or uri in self.published:
                self.text_document_publish_diagnostics(
                    types.PublishDiagnosticsParams(uri=uri, diagnostics=diagnostics, version=doc.version)
                )
            if diagnostics:
                now.add(uri)
        for uri in self.published - now - {from_fs_path(p) for p in self.findings}:
            self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=uri, diagnostics=[]))
        self.published = now

    def findings_at(self, uri: str, wanted: types.Range) -> list[Finding]:
        path = to_fs_path(uri)
        doc = self.workspace.get_text_document(uri)
        out = []
        for f in self.findings.get(os.path.abspath(path or ""), ()):
            r = finding_range(doc, f)
            if (r.start.line, r.start.character) <= (wanted.end.line, wanted.end.character) and (
                wanted.start.line,
                wanted.start.character,
            ) <= (r.end.line, r.end.character):
                out.append(f)
        return out


def _range(doc: TextDocument, start: tuple[int, int], end: tuple[int, int]) -> types.Range:
    server = ServerTextRange(ServerTextPosition(start[0] - 1, start[1]), ServerTextPosition(end[0] - 1, end[1]))
    return doc.range_to_client_units(server)


def finding_range(doc: TextDocument, f: Finding) -> types.Range:
    return _range(doc, (f.line, f.column), (max(f.end_line, f.line), f.end_column if f.end_line >= f.line else f.column))


def diagnostic(doc: TextDocument, f: Finding) -> types.Diagnostic:
    link = rule_link(f.code)
    fixable = f.fix is not None and f.fix.edits
    return types.Diagnostic(
        range=finding_range(doc, f),
        message=f.message,
        severity=types.DiagnosticSeverity.Error if f.code == "CKP001" else types.DiagnosticSeverity.Warning,
        code=f.code,
        code_description=types.CodeDescription(href=link) if link else None,
        source=SOURCE,
        data={"fix": f.fix.applicability} if fixable else None,
    )


def _text_edits(doc: TextDocument, edits: Iterable[Edit]) -> list[types.TextEdit]:
    return [
        types.TextEdit(range=_range(doc, (e.start_line, e.start_column), (e.end_line, e.end_column)), new_text=e.replacement)
        for e in edits
    ]


def _whole(doc: TextDocument, text: str) -> types.TextEdit:
    lines = doc.lines
    end = doc.position_to_client_units(ServerTextPosition(len(lines), 0))
    return types.TextEdit(range=types.Range(types.Position(0, 0), end), new_text=text)


def build_server() -> CkptlintServer:
    server = CkptlintServer()

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: CkptlintServer, params: types.DidOpenTextDocumentParams) -> None:
        ls.schedule()

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: CkptlintServer, params: types.DidChangeTextDocumentParams) -> None:
        ls.schedule()

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: CkptlintServer, params: types.DidSaveTextDocumentParams) -> None:
        ls.schedule()

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: CkptlintServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.findings.pop(os.path.abspath(to_fs_path(params.text_document.uri) or ""), None)
        ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=params.text_document.uri, diagnostics=[]))
        ls.published.discard(params.text_document.uri)
        ls.schedule()

    # A file created, deleted or renamed on disk can change what the open files import.
    @server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    def watched(ls: CkptlintServer, params: types.DidChangeWatchedFilesParams) -> None:
        ls.schedule()

    @server.feature(types.WORKSPACE_DID_DELETE_FILES)
    def deleted(ls: CkptlintServer, params: types.DeleteFilesParams) -> None:
        ls.schedule()

    @server.feature(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionOptions(code_action_kinds=[types.CodeActionKind.QuickFix, FIX_ALL]),
    )
    def code_action(ls: CkptlintServer, params: types.CodeActionParams) -> list[types.CodeAction]:
        uri = params.text_document.uri
        doc = ls.workspace.get_text_document(uri)
        only = params.context.only
        actions: list[types.CodeAction] = []
        if not only or types.CodeActionKind.QuickFix in only:
            for f in ls.findings_at(uri, params.range):
                if f.fix is None or not f.fix.edits:
                    continue
                unsafe = f.fix.applicability == "unsafe"
                actions.append(
                    types.CodeAction(
                        title=f"{f.code}: {f.fix.description}" + (" (unsafe fix)" if unsafe else ""),
                        kind=types.CodeActionKind.QuickFix,
                        diagnostics=[diagnostic(doc, f)],
                        is_preferred=not unsafe,
                        edit=types.WorkspaceEdit(changes={uri: _text_edits(doc, f.fix.edits)}),
                    )
                )
        if not only or any(str(k).startswith("source") for k in only):
            path = os.path.abspath(to_fs_path(uri) or "")
            fixed = fix_all(doc.source, ls.findings.get(path, ()))
            if fixed is not None:
                actions.append(
                    types.CodeAction(
                        title="ckptlint: fix all safely fixable findings",
                        kind=FIX_ALL,
                        edit=types.WorkspaceEdit(changes={uri: [_whole(doc, fixed)]}),
                    )
                )
        return actions

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    def hover(ls: CkptlintServer, params: types.HoverParams) -> types.Hover | None:
        here = types.Range(params.position, params.position)
        docs = [rule_markdown(f.code) for f in ls.findings_at(params.text_document.uri, here)]
        text = "\n\n---\n\n".join(dict.fromkeys(d for d in docs if d))
        if not text:
            return None
        return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=text))

    return server


def serve() -> int:
    """Run the server on stdin/stdout until the client says exit."""
    build_server().start_io()
    return 0
