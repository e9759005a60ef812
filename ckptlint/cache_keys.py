"""What the result cache is keyed and signed by: the content hash of a file,
the tool fingerprint, and the per-user signing key of its stores.

:class:`ckptlint.cache.ResultCache` builds its store's key from these (see
that module for what a key covers); import them from :mod:`ckptlint.cache`,
as before.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["content_hash", "tool_fingerprint"]


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tool_fingerprint() -> str:
    """ckptlint's version plus the size and mtime of its own source files."""
    from ckptlint import __version__

    package = Path(__file__).resolve().parent
    h = hashlib.sha256(__version__.encode())
    for path in sorted(package.rglob("*.py")):
        try:
            st = path.stat()
        except OSError:
            continue
        h.update(f"{path.relative_to(package)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def _signing_key() -> bytes | None:
    """The per-user key that signs cache stores (created on first use), or None."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(base, "ckptlint", "cache-key")
    try:
        with open(path, "rb") as fh:
            key = fh.read()
        if len(key) >= 32:
            return key
    except OSError:
        pass
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        key = os.urandom(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        return key
    except FileExistsError:  # another run created it just now
        try:
            with open(path, "rb") as fh:
                key = fh.read()
            return key if len(key) >= 32 else None
        except OSError:
            return None
    except OSError:
        return None  # nowhere to keep a key: run uncached rather than trust unsigned stores
