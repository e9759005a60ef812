"""The language server behind ``ckptlint server`` (the ``lsp`` extra: pygls).

:mod:`ckptlint.lsp.session` decides what to check and runs the engine;
:mod:`ckptlint.lsp.server` speaks LSP. Only the latter imports pygls.
"""

from __future__ import annotations

__all__ = ["server", "session"]
