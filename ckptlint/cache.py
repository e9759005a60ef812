"""The persistent result cache under ``.ckptlint_cache/`` (``--no-cache`` skips it).

An entry holds one driver file's analysis result and is keyed by

* the file's absolute path and the sha256 of its content,
* the tool fingerprint (version plus the stat of ckptlint's own sources, so
  a development checkout never serves results of older code) and a hash of
  the effective engine options and the working directory (finding paths are
  relative to it).

It is valid only while every file it depends on (the files holding classes
and helpers the analysis followed) still has the content hash recorded with
it, so editing ``blocks.py`` re-analyses ``model.py`` that checkpoints a
``Block``.

Hashing every file on every run would cost as much as a cold prefilter pass,
so a stat index maps ``(path) -> (size, mtime_ns, sha256)``; the hash is
trusted while size and mtime are unchanged and recomputed otherwise (a fresh
CI checkout rewrites mtimes, which costs one read and hash per file, never a
re-analysis). As in git's racy-index handling, a stat taken less than
:data:`RACY_SECONDS` after the file was modified is not recorded, because a
second edit within the filesystem's timestamp granularity could go unseen.
The prefilter's verdict is cached by content hash, so warm runs neither read
nor hash files that cannot reach checkpointing.

Per-file *facts* that depend only on a file's path and content (the
checkpoint wrappers it defines, whether it parses) are cached the same way.
Wrappers found anywhere in the tree widen the engine's options, so results and
prefilter verdicts are additionally tied to an *analysis key* (the hash of the
final options): when a wrapper appears or disappears, they are dropped while
hashes and facts survive. The key also holds the content hash of every file whose
facts say it changes what other files run (a DDP wrapper, a checkpoint monkeypatch):
another file's findings may depend on it without importing it.

The store is one JSON file per (fingerprint, options) pair, written
atomically at the end of a run; a corrupt or foreign file is ignored. Each
store is signed with an HMAC whose key lives outside the tree
(``$XDG_CACHE_HOME/ckptlint/cache-key``, created owner-only on first use), so
a store committed to a repository or edited by hand is never trusted: its
findings are not served and its fix edits never reach ``--fix``. Entries that
pass the signature are still checked for shape before use.

The cache folder is never used through a symlink: a ``.ckptlint_cache`` that
is a link (say, committed into a repository) would make ckptlint delete and
write files in its target, so the run goes uncached with one warning.

The key material (:func:`content_hash`, :func:`tool_fingerprint`, the signing
key) is in :mod:`ckptlint.cache_keys`, the entries' values and shape checks
(:class:`Facts`, :class:`CachedResult`) in :mod:`ckptlint.cache_entries`;
every name is importable from here, as before.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from ckptlint.cache_entries import CachedResult, Facts, _nat, _valid_findings, _valid_result
from ckptlint.cache_keys import _signing_key, content_hash, tool_fingerprint
from ckptlint.types import Finding

__all__ = ["CACHE_DIR_NAME", "CachedResult", "Facts", "ResultCache", "tool_fingerprint", "content_hash"]

CACHE_DIR_NAME = ".ckptlint_cache"
FORMAT_VERSION = 1
RACY_SECONDS = 2.0
KEEP_STORES = 4
_MISSING = "<missing>"


class ResultCache:
    """Content-addressed analysis results for one configuration."""

    def __init__(
        self,
        root: str,
        options: Mapping[str, Any],
        *,
        enabled: bool = True,
        read_only: bool = False,
        directory: str | None = None,
    ) -> None:
        self.enabled = enabled
        # Read-only: serve hits but record nothing (a --diff pass analyses
        # in-memory fixed sources, which must never be stored as disk truth).
        self.read_only = read_only
        self.directory = Path(directory) if directory else Path(root) / CACHE_DIR_NAME
        # One line for stderr when the cache had to be switched off.
        self.warning: str | None = None
        self._key: bytes | None = None
        if enabled and os.path.islink(self.directory):
            self.warning = (
                f"{self.directory} is a symlink; the cache is not used (it would write and delete "
                "files in the link's target): remove the link to cache again"
            )
            enabled = False
        if enabled:
            self._key = _signing_key()
            enabled = self._key is not None
        self.enabled = enabled
        key_material = json.dumps(
            {"tool": tool_fingerprint(), "options": options, "cwd": os.getcwd(), "format": FORMAT_VERSION},
            sort_keys=True,
            default=str,
        )
        self.key = hashlib.sha256(key_material.encode()).hexdigest()[:24]
        self.file = self.directory / f"v{FORMAT_VERSION}-{self.key}.json"
        self._stat: dict[str, list[Any]] = {}
        self._prefilter: dict[str, bool] = {}
        self._results: dict[str, dict[str, Any]] = {}
        self._facts: dict[str, list[Any]] = {}
        self._analysis_key: str | None = None
        self._hash_memo: dict[str, str] = {}
        self._dirty = False
        self.hits = 0
        self.misses = 0
        if enabled:
            self._load()

    # ------------------------------------------------------------ storage

    def _load(self) -> None:
        try:
            with open(self.file, "rb") as fh:
                raw = fh.read()
            mac, _, payload = raw.partition(b"\n")
            if not hmac.compare_digest(mac, self._sign(payload)):
                return  # written by someone else (or edited): never trusted
            data = json.loads(payload)
        except (OSError, ValueError):
            return
        if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
            return
        stat_index = data.get("stat")
        facts = data.get("facts")
        if isinstance(facts, dict):
            self._facts = {
                k: v
                for k, v in facts.items()
                if isinstance(v, list) and len(v) == 4 and isinstance(v[0], str) and isinstance(v[1], list)
                and (v[2] is None or _valid_findings(v[2])) and isinstance(v[3], bool)
            }
        key = data.get("analysis_key")
        self._analysis_key = key if isinstance(key, str) else None
        prefilter = data.get("prefilter")
        results = data.get("results")
        if isinstance(stat_index, dict):
            self._stat = {
                k: v
                for k, v in stat_index.items()
                if isinstance(v, list) and len(v) == 3 and _nat(v[0]) and _nat(v[1]) and isinstance(v[2], str)
            }
        if isinstance(prefilter, dict):
            self._prefilter = {k: v for k, v in prefilter.items() if isinstance(v, bool)}
        if isinstance(results, dict):
            self._results = {k: v for k, v in results.items() if _valid_result(v)}

    def _sign(self, payload: bytes) -> bytes:
        assert self._key is not None
        return hmac.new(self._key, payload, hashlib.sha256).hexdigest().encode()

    def save(self) -> None:
        """Write the store atomically if anything changed."""
        if not self.enabled or self.read_only or not self._dirty:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if os.path.islink(self.directory):  # appeared during the run
                return
            _create(self.directory / ".gitignore", "# Created by ckptlint; safe to delete.\n*\n")
            _create(self.directory / "CACHEDIR.TAG", "Signature: 8a477f597d28d172789f06886806bc55\n# ckptlint cache\n")
            # Keep the stores of a few recent configurations (say, the
            # pre-commit hook's and a manual run's); older ones never hit again.
            others = sorted(
                (p for p in self.directory.glob("v*-*.json") if p != self.file),
                key=lambda p: p.stat().st_mtime if p.exists() else 0.0,
                reverse=True,
            )
            for old in others[KEEP_STORES - 1 :]:
                try:
                    old.unlink()
                except OSError:
                    pass
            payload = json.dumps(
                {
                    "format": FORMAT_VERSION,
                    "stat": self._stat,
                    "prefilter": self._prefilter,
                    "results": self._results,
                    "facts": self._facts,
                    "analysis_key": self._analysis_key,
                },
                separators=(",", ":"),
            )
            body = payload.encode("utf-8", "surrogatepass")
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.directory)
            with os.fdopen(fd, "wb") as fh:
                fh.write(self._sign(body) + b"\n" + body)
            # mkstemp makes it owner-only; a cache is as readable as the tree.
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.file)
        except OSError:
            # A read-only checkout must still lint; it just stays cold.
            pass
        self._dirty = False

    # ------------------------------------------------------------ hashing

    def _stat_key(self, path: str) -> str:
        return os.path.abspath(path)

    def override(self, path: str, digest: str) -> None:
        """Treat ``path`` as having content ``digest`` (an in-memory version)."""
        self._hash_memo[self._stat_key(path)] = digest

    def known_hash(self, path: str) -> str | None:
        """The content hash of ``path`` if its stat is unchanged since it was recorded."""
        key = self._stat_key(path)
        memo = self._hash_memo.get(key)
        if memo is not None:
            return memo
        entry = self._stat.get(key)
        if entry is None:
            return None
        try:
            st = os.stat(key)
        except OSError:
            return None
        if entry[0] == st.st_size and entry[1] == st.st_mtime_ns:
            self._hash_memo[key] = entry[2]
            return entry[2]
        return None

    def record(self, path: str, data: bytes) -> str:
        """Hash ``data`` (the content just read from ``path``) and remember its stat."""
        key = self._stat_key(path)
        digest = content_hash(data)
        self._hash_memo[key] = digest
        if not self.enabled:
            return digest
        try:
            st = os.stat(key)
        except OSError:
            return digest
        if time.time() - st.st_mtime_ns / 1e9 >= RACY_SECONDS and st.st_size == len(data):
            new = [st.st_size, st.st_mtime_ns, digest]
            if self._stat.get(key) != new:
                self._stat[key] = new
                self._dirty = True
        return digest

    def current_hash(self, path: str) -> str:
        """Content hash of ``path`` now (stat fast path, else read and hash)."""
        known = self.known_hash(path)
        if known is not None:
            return known
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError:
            return _MISSING
        return self.record(path, data)

    # ------------------------------------------------------------ facts

    def facts(self, path: str, digest: str) -> Facts | None:
        if not self.enabled:
            return None
        entry = self._facts.get(self._stat_key(path))
        if entry is None or entry[0] != digest:
            return None
        try:
            wrappers = tuple(str(w) for w in entry[1])
            syntax = None if entry[2] is None else tuple(Finding.from_dict(f) for f in entry[2])
        except (KeyError, TypeError, ValueError):
            return None
        return Facts(wrappers, syntax, entry[3])

    def remember_facts(self, path: str, digest: str, facts: Facts) -> None:
        if not self.enabled:
            return
        entry = [
            digest,
            list(facts.wrappers),
            None if facts.syntax is None else [f.to_dict() for f in facts.syntax],
            facts.reaches_others,
        ]
        key = self._stat_key(path)
        if self._facts.get(key) != entry:
            self._facts[key] = entry
            self._dirty = True

    def set_analysis_key(self, key: str) -> None:
        """Results and prefilter verdicts hold only for this analysis key."""
        if self._analysis_key != key:
            if self._results or self._prefilter:
                self._dirty = True
            self._results.clear()
            self._prefilter.clear()
            self._analysis_key = key
            self._dirty = True

    # ------------------------------------------------------------ prefilter

    def prefilter_verdict(self, digest: str) -> bool | None:
        return self._prefilter.get(digest) if self.enabled else None

    def remember_prefilter(self, digest: str, verdict: bool) -> None:
        if self.enabled and self._prefilter.get(digest) is not verdict:
            self._prefilter[digest] = verdict
            self._dirty = True

    # ------------------------------------------------------------ results

    def lookup(self, path: str, digest: str) -> CachedResult | None:
        """The cached result for ``path`` at content ``digest``, if still valid."""
        if not self.enabled:
            return None
        entry = self._results.get(self._stat_key(path))
        if entry is None or entry.get("hash") != digest:
            self.misses += 1
            return None
        try:
            for dep, dep_hash in entry["deps"]:
                if self.current_hash(dep) != dep_hash:
                    self.misses += 1
                    return None
            result = CachedResult(
                findings=tuple(Finding.from_dict(f) for f in entry["findings"]),
                dependencies=tuple(dep for dep, _ in entry["deps"]),
                error=entry.get("error"),
            )
        except (KeyError, TypeError, ValueError):
            self.misses += 1
            return None
        self.hits += 1
        return result

    def store(
        self,
        path: str,
        digest: str,
        findings: Iterable[Finding],
        dependencies: Iterable[str],
        error: str | None,
    ) -> None:
        """Remember a fresh result; results with internal errors are not cached
        (the next run should retry, possibly with a fixed ckptlint)."""
        if not self.enabled or error is not None:
            return
        deps = sorted({d for d in dependencies if os.path.abspath(d) != os.path.abspath(path)})
        self._results[self._stat_key(path)] = {
            "hash": digest,
            "findings": [f.to_dict() for f in findings],
            "deps": [[d, self.current_hash(d)] for d in deps],
            "error": None,
        }
        self._dirty = True


def _create(path: Path, text: str) -> None:
    """Create ``path`` with ``text`` unless something (even a dangling symlink) is there."""
    if os.path.lexists(path):
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError:
        return
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
