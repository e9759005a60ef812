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


# --- stale and hostile caches (real engine) ----------------------------------------------

import pytest  # noqa: E402

from ckptlint.config import Config  # noqa: E402
from ckptlint.runner import RunSettings, run  # noqa: E402

_MODEL = (
    "from torch.utils.checkpoint import checkpoint\n"
    "from {module} import work\n"
    "def f(x):\n"
    "    return checkpoint(work, x, use_reentrant=False)\n"
)
_MUTATES = "def work(x):\n    x.add_(1)\n    return x\n"
_PURE = "def work(x):\n    return x + 1\n"


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    (tmp_path / "pyproject.toml").write_text("")
    return tmp_path


def _check(root: Path, *, cached: bool = True) -> list[tuple[str, int, str]]:
    result = run(["."], RunSettings(config=Config(root=str(root), project_root=str(root)), jobs=1, use_cache=cached))
    assert not result.errors, result.errors
    return sorted((f.path, f.line, f.code) for f in result.findings)


def _aged(root: Path) -> None:
    for p in root.rglob("*.py"):
        _age(p)


def test_file_created_after_a_cached_run_invalidates_the_import(tree: Path) -> None:
    (tree / "model.py").write_text(_MODEL.format(module="helpers"))
    _aged(tree)
    assert _check(tree) == []  # helpers does not exist: nothing to follow
    (tree / "helpers.py").write_text(_MUTATES)
    _aged(tree)
    assert _check(tree) == [("helpers.py", 2, "CKP101")] == _check(tree, cached=False)


def test_package_wins_over_module_of_the_same_name(tree: Path) -> None:
    (tree / "pkg" / "blocks").mkdir(parents=True)
    (tree / "pkg" / "__init__.py").write_text("")
    (tree / "pkg" / "blocks.py").write_text(_PURE)
    (tree / "pkg" / "blocks" / "__init__.py").write_text(_MUTATES)  # what `import pkg.blocks` loads
    (tree / "model.py").write_text(_MODEL.format(module="pkg.blocks"))
    assert _check(tree, cached=False) == [("pkg/blocks/__init__.py", 2, "CKP101")]


def test_package_created_beside_module_invalidates(tree: Path) -> None:
    (tree / "pkg").mkdir()
    (tree / "pkg" / "__init__.py").write_text("")
    (tree / "pkg" / "blocks.py").write_text(_PURE)
    (tree / "model.py").write_text(_MODEL.format(module="pkg.blocks"))
    _aged(tree)
    assert _check(tree) == []
    (tree / "pkg" / "blocks").mkdir()
    (tree / "pkg" / "blocks" / "__init__.py").write_text(_MUTATES)
    _aged(tree)
    assert _check(tree) == [("pkg/blocks/__init__.py", 2, "CKP101")]


def _store(root: Path) -> Path:
    (store,) = (root / ".ckptlint_cache").glob("v*-*.json")
    return store


def test_forged_cache_entry_is_never_trusted(tree: Path) -> None:
    (tree / "helpers.py").write_text(_MUTATES)
    (tree / "model.py").write_text(_MODEL.format(module="helpers"))
    _aged(tree)
    honest = _check(tree)
    store = _store(tree)
    mac, _, body = store.read_bytes().partition(b"\n")
    data = json.loads(body)
    (entry,) = data["results"].values()
    forged = dict(entry["findings"][0], message="FORGED", fix={
        "description": "rm -rf", "applicability": "safe",
        "edits": [{"start_line": 1, "start_column": 0, "end_line": 1, "end_column": 0, "replacement": "import os\n"}]})
    entry["findings"] = [forged]
    for variant in (mac + b"\n" + json.dumps(data).encode(), json.dumps(data).encode()):
        store.write_bytes(variant)
        result = run(["."], RunSettings(config=Config(root=str(tree), project_root=str(tree)), jobs=1, fix=True))
        assert "FORGED" not in {f.message for f in result.findings}
        assert sorted((f.path, f.line, f.code) for f in result.findings) == honest
        assert not (tree / "model.py").read_text().startswith("import os")


def test_malformed_but_signed_entries_are_ignored(tree: Path) -> None:
    cache = ResultCache(str(tree), OPTS)
    (tree / "m.py").write_text("x = 1\n")
    cache.store("m.py", "h1", [_finding("m.py")], [], None)
    cache.save()
    store = _store(tree)
    _mac, _, body = store.read_bytes().partition(b"\n")
    data = json.loads(body)
    (entry,) = data["results"].values()
    entry["findings"][0]["line"] = "3; rm"  # a wrong type
    payload = json.dumps(data).encode()
    store.write_bytes(cache._sign(payload) + b"\n" + payload)
    assert ResultCache(str(tree), OPTS).lookup("m.py", "h1") is None


def test_symlinked_cache_folder_is_refused(tree: Path) -> None:
    target = tree / "precious"
    target.mkdir()
    (target / "v1-keep.json").write_text("{}")
    (target / "notes.txt").write_text("mine\n")
    (tree / ".ckptlint_cache").symlink_to(target)
    (tree / "model.py").write_text(_MODEL.format(module="helpers"))
    (tree / "helpers.py").write_text(_MUTATES)
    before = sorted((p.name, p.read_bytes()) for p in target.iterdir())
    for _ in range(2):
        result = run(["."], RunSettings(config=Config(root=str(tree), project_root=str(tree)), jobs=1))
        assert [w for w in result.warnings if "symlink" in w] and result.cache_hits == 0
    assert sorted((p.name, p.read_bytes()) for p in target.iterdir()) == before


def test_dangling_symlink_inside_cache_folder_is_not_followed(tree: Path) -> None:
    (tree / ".ckptlint_cache").mkdir()
    (tree / ".ckptlint_cache" / ".gitignore").symlink_to(tree / "outside.txt")
    (tree / "model.py").write_text(_MODEL.format(module="helpers"))
    _aged(tree)
    _check(tree)
    assert not (tree / "outside.txt").exists()


_SHARED = (
    "from torch import nn\n"
    "from torch.utils.checkpoint import checkpoint\n"
    "class Shared(nn.Module):\n"
    "    def __init__(self):\n"
    "        super().__init__()\n"
    "        self.layer = nn.Linear(8, 8)\n"
    "    def forward(self, x):\n"
    "        for _ in range(3):\n"
    "            x = checkpoint(self.layer, x, use_reentrant=True)\n"
    "        return x\n"
)
_TRAIN = "from model import Shared\n\ndef step(x):\n    return {wrap}(x)\n"


def test_a_training_script_that_starts_wrapping_in_ddp_rechecks_what_it_imports(tree: Path) -> None:
    """CKP404 on model.py depends on train.py, which model.py does not import: a cached run must see it."""
    (tree / "model.py").write_text(_SHARED)
    (tree / "train.py").write_text(_TRAIN.format(wrap="Shared()"))
    _aged(tree)
    assert _check(tree) == [] == _check(tree)  # one process: no finding, and the cache holds that
    (tree / "train.py").write_text("from torch.nn.parallel import DistributedDataParallel as DDP\n" + _TRAIN.format(wrap="DDP(Shared())"))
    _aged(tree)
    assert _check(tree) == [("model.py", 9, "CKP404")] == _check(tree, cached=False)
    (tree / "other.py").write_text("x = 1\n")  # an unrelated file: the result stays cached
    _aged(tree)
    assert _check(tree) == [("model.py", 9, "CKP404")]
    (tree / "train.py").write_text(_TRAIN.format(wrap="Shared()"))  # the wrapper goes away again
    _aged(tree)
    assert _check(tree) == []
