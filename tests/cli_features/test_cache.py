"""The persistent cache: hits, content and dependency invalidation, corruption."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ckptlint import cache as cache_mod
from ckptlint.cache import ResultCache
from ckptlint.types import Finding, Fix, Edit, Site

OPTS = {"checkpoint_functions": [], "max_helper_depth": 3}


def _age(path: Path, seconds: float = 60) -> None:
    """Backdate mtime so the racy-stat guard lets the stat index record it."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))


def _finding(path: str) -> Finding:
    return Finding(
        "CKP101", "msg", path, 3, 4, 3, 9, callable="Block.forward", checkpoint_site=Site("m.py", 9),
        chain=("Block.forward",), fix=Fix("d", "unsafe", (Edit(3, 4, 3, 9, "x"),)), statement_lines=(3, 4),
    )


def test_round_trip_and_dependency_invalidation(tmp_path: Path) -> None:
    model = tmp_path / "model.py"
    blocks = tmp_path / "blocks.py"
    model.write_text("from blocks import Block\n")
    blocks.write_text("class Block: ...\n")
    _age(model), _age(blocks)
    c = ResultCache(str(tmp_path), OPTS)
    digest = c.current_hash(str(model))
    f = _finding(str(blocks))
    c.store(str(model), digest, [f], [str(blocks), str(model)], None)
    c.save()

    c2 = ResultCache(str(tmp_path), OPTS)
    hit = c2.lookup(str(model), c2.current_hash(str(model)))
    assert hit is not None and hit.findings == (f,) and hit.dependencies == (str(blocks),)

    # editing the dependency invalidates the driver's entry
    blocks.write_text("class Block:\n    pass\n")
    c3 = ResultCache(str(tmp_path), OPTS)
    assert c3.lookup(str(model), c3.current_hash(str(model))) is None


def test_content_change_same_stat_is_caught_by_hash(tmp_path: Path) -> None:
    model = tmp_path / "m.py"
    model.write_text("a = 1\n")
    _age(model)
    c = ResultCache(str(tmp_path), OPTS)
    d1 = c.current_hash(str(model))
    c.store(str(model), d1, [], [], None)
    c.save()
    # same size, different content, mtime changed: stat mismatch -> rehash
    model.write_text("a = 2\n")
    c2 = ResultCache(str(tmp_path), OPTS)
    d2 = c2.current_hash(str(model))
    assert d2 != d1 and c2.lookup(str(model), d2) is None


def test_stat_fast_path_avoids_reading(tmp_path: Path, monkeypatch) -> None:
    model = tmp_path / "m.py"
    model.write_text("a = 1\n")
    _age(model)
    c = ResultCache(str(tmp_path), OPTS)
    digest = c.current_hash(str(model))
    c.remember_prefilter(digest, False)
    c.save()
    c2 = ResultCache(str(tmp_path), OPTS)
    real_open = open

    def no_read(*args, **kwargs):  # type: ignore[no-untyped-def]
        if str(args[0]) == str(model):
            raise AssertionError("read a file whose stat was unchanged")
        return real_open(*args, **kwargs)

    monkeypatch.setattr("builtins.open", no_read)
    assert c2.known_hash(str(model)) == digest
    assert c2.prefilter_verdict(digest) is False


def test_racy_fresh_file_is_not_stat_indexed(tmp_path: Path) -> None:
    model = tmp_path / "m.py"
    model.write_text("a = 1\n")  # mtime = now
    c = ResultCache(str(tmp_path), OPTS)
    c.current_hash(str(model))
    c.save()
    assert ResultCache(str(tmp_path), OPTS).known_hash(str(model)) is None


def test_options_and_disabled(tmp_path: Path) -> None:
    model = tmp_path / "m.py"
    model.write_text("a = 1\n")
    _age(model)
    c = ResultCache(str(tmp_path), OPTS)
    d = c.current_hash(str(model))
    c.store(str(model), d, [], [], None)
    c.save()
    other = ResultCache(str(tmp_path), {**OPTS, "max_helper_depth": 1})
    assert other.lookup(str(model), d) is None
    off = ResultCache(str(tmp_path), OPTS, enabled=False)
    assert off.lookup(str(model), d) is None
    # internal errors are never cached
    c4 = ResultCache(str(tmp_path), OPTS)
    c4.store(str(model), d, [], [], "Traceback ...")
    assert c4.lookup(str(model), d) is not None  # the earlier good entry stays


def test_corrupt_store_is_ignored(tmp_path: Path) -> None:
    model = tmp_path / "m.py"
    model.write_text("a = 1\n")
    c = ResultCache(str(tmp_path), OPTS)
    c.store(str(model), c.current_hash(str(model)), [], [], None)
    c.save()
    c.file.write_text("{not json")
    c2 = ResultCache(str(tmp_path), OPTS)
    assert c2.lookup(str(model), c2.current_hash(str(model))) is None
    # a structurally wrong entry is a miss, not a crash
    c.file.write_text(json.dumps({"format": cache_mod.FORMAT_VERSION, "results": {str(model): {"hash": "x"}}}))
    c3 = ResultCache(str(tmp_path), OPTS)
    assert c3.lookup(str(model), "x") is None
    assert (tmp_path / ".ckptlint_cache" / ".gitignore").read_text().strip().endswith("*")


def test_unwritable_root_does_not_fail(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    c = ResultCache(str(blocker), OPTS)  # cache dir would be under a regular file
    c.store(str(blocker), "h", [], [], None)
    c.save()  # must not raise
