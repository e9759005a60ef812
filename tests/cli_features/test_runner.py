"""Runner mechanics (cache, pool, selection, suppressions, fix loop) on a stand-in engine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ckptlint import runner, workers
from ckptlint.config import Config, SelectionLayer, load_config
from ckptlint.runner import RunSettings, run

from . import fake_engine


@pytest.fixture(autouse=True)
def _fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(runner, "_engine", lambda: fake_engine)
    monkeypatch.setattr(workers, "_engine", lambda: fake_engine)
    monkeypatch.chdir(tmp_path)
    fake_engine.CALLS.clear()


def _age(*paths: Path) -> None:
    for p in paths:
        st = p.stat()
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns - 60 * 10**9))


def _settings(**kw: object) -> RunSettings:
    kw.setdefault("config", Config(root=os.getcwd()))
    kw.setdefault("jobs", 1)
    return RunSettings(**kw)  # type: ignore[arg-type]


def _codes(result: runner.RunResult) -> list[tuple[str, int, str]]:
    return [(f.path, f.line, f.code) for f in result.findings]


def test_prefilter_cache_and_dependency_invalidation(tmp_path: Path) -> None:
    (tmp_path / "model.py").write_text("# checkpoint\nx.add_(1)\n# dep: blocks.py\n")
    (tmp_path / "blocks.py").write_text("ok = 1\n")
    (tmp_path / "other.py").write_text("x.add_(1)\n")  # prefilter rules it out
    _age(tmp_path / "model.py", tmp_path / "blocks.py", tmp_path / "other.py")
    first = run(["."], _settings())
    assert _codes(first) == [("model.py", 2, "CKP101")]
    assert first.files_checked == 3 and first.files_analysed == 1
    # non-drivers get only the syntax check
    assert fake_engine.CALLS == ["model.py", "syntax:blocks.py", "syntax:other.py"]

    fake_engine.CALLS.clear()
    warm = run(["."], _settings())
    assert fake_engine.CALLS == [] and warm.cache_hits == 1
    assert _codes(warm) == _codes(first)

    # a dependency changes: the driver is analysed again and sees the change
    (tmp_path / "blocks.py").write_text("self.n = BAD\n")
    third = run(["."], _settings())
    assert fake_engine.CALLS == ["model.py", "syntax:blocks.py"]
    assert ("blocks.py", 1, "CKP201") in _codes(third)

    fake_engine.CALLS.clear()
    run(["."], _settings(use_cache=False))
    assert fake_engine.CALLS == ["model.py", "syntax:blocks.py", "syntax:other.py"]


def test_syntax_errors_in_non_drivers_are_cached(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("def f(:\n")
    _age(tmp_path / "broken.py")
    assert _codes(run(["."], _settings())) == [("broken.py", 1, "CKP001")]
    fake_engine.CALLS.clear()
    assert _codes(run(["."], _settings())) == [("broken.py", 1, "CKP001")]
    assert fake_engine.CALLS == []


def test_wrapper_in_one_file_widens_the_prefilter_and_resets_results(tmp_path: Path) -> None:
    (tmp_path / "model.py").write_text("# checkpoint\nx.add_(1)\n")
    (tmp_path / "user.py").write_text("my_ckpt(block)\ny.add_(2)\n")
    _age(tmp_path / "model.py", tmp_path / "user.py")
    assert _codes(run(["."], _settings())) == [("model.py", 2, "CKP101")]
    # a wrapper named my_ckpt appears: user.py now reaches checkpoint
    (tmp_path / "wrappers.py").write_text("# wrapper: pkg.my_ckpt\n")
    fake_engine.CALLS.clear()
    result = run(["."], _settings(config=Config(root=os.getcwd())))
    assert ("user.py", 2, "CKP101") in _codes(result)
    assert "model.py" in fake_engine.CALLS  # analysis key changed: results recomputed


def test_pool_matches_serial(tmp_path: Path) -> None:
    for i in range(12):
        (tmp_path / f"m{i:02d}.py").write_text(f"# checkpoint\ny = 1\nx.add_({i})\nF.relu(x, inplace=True)\n")
    (tmp_path / "crash.py").write_text("# checkpoint CRASH\n")
    serial = run(["."], _settings(use_cache=False))
    pooled = run(["."], _settings(use_cache=False, jobs=2))
    assert _codes(serial) == _codes(pooled)
    assert len(serial.findings) == 24
    # one file's crash is an error for that file; the others are still checked
    assert [p for p, _ in pooled.errors] == ["crash.py"]
    assert "RuntimeError" in pooled.errors[0][1]


def test_selection_and_per_file_ignores(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.ckptlint]\nignore = ["CKP105"]\n[tool.ckptlint.per-file-ignores]\n"legacy/*" = ["CKP1"]\n'
    )
    (tmp_path / "legacy").mkdir()
    body = "# checkpoint\nx.add_(1)\nF.relu(x, inplace=True)\n"
    (tmp_path / "m.py").write_text(body)
    (tmp_path / "legacy" / "old.py").write_text(body)
    cfg = load_config(["."])
    assert _codes(run(["."], _settings(config=cfg))) == [("m.py", 2, "CKP101")]
    # the command line is a later layer: --select starts afresh
    cli = cfg.with_cli(select=["CKP105"])
    assert _codes(run(["."], _settings(config=cli))) == [("m.py", 3, "CKP105")]


def test_exclude(tmp_path: Path) -> None:
    (tmp_path / "gen").mkdir()
    (tmp_path / "gen" / "a.py").write_text("# checkpoint\nx.add_(1)\n")
    (tmp_path / "b.py").write_text("# checkpoint\nx.add_(1)\n")
    cfg = Config(root=str(tmp_path), extend_exclude=("gen",))
    result = run(["."], _settings(config=cfg))
    assert _codes(result) == [("b.py", 2, "CKP101")] and result.files_checked == 1


def test_suppressions_and_unused(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(
        "# checkpoint\n"
        "x.add_(1)  # ckptlint: ignore[CKP101]\n"
        "y.add_(1)  # noqa: CKP1\n"
        "z.add_(1)  # noqa\n"
        "w = 1  # ckptlint: ignore[CKP101]\n"
    )
    (tmp_path / "clean.py").write_text("v = 1  # noqa: CKP105\n")
    result = run(["."], _settings())
    assert _codes(result) == [("m.py", 4, "CKP101")]
    assert [(f.line, f.code) for f in result.suppressed] == [(2, "CKP101"), (3, "CKP101")]
    bare = run(["."], _settings(honor_bare_noqa=True))
    assert _codes(bare) == []
    unused = run(["."], _settings(report_unused_ignores=True))
    assert _codes(unused) == [("clean.py", 1, "CKP002"), ("m.py", 4, "CKP101"), ("m.py", 5, "CKP002")]
    # CKP002 can be turned off like any rule
    cfg = Config(root=str(tmp_path), layers=(SelectionLayer(ignore=("CKP002",)),))
    assert ("m.py", 5, "CKP002") not in _codes(run(["."], _settings(config=cfg, report_unused_ignores=True)))


def test_skip_file(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("# checkpoint\n# ckptlint: skip-file\nx.add_(1)\n")
    assert _codes(run(["."], _settings())) == []


def test_fix_safe_then_unsafe_then_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    original = "# checkpoint\nx.add_(1)\nF.relu(x, inplace=True)\n"
    path.write_text(original)
    safe = run(["."], _settings(fix=True))
    assert path.read_text() == "# checkpoint\nx.add_(1)\nF.relu(x, inplace=False)\n"
    assert [f.code for f in safe.fixes.applied] == ["CKP105"]
    assert _codes(safe) == [("m.py", 2, "CKP101")]
    both = run(["."], _settings(fix=True, unsafe_fixes=True))
    assert path.read_text() == "# checkpoint\nx = x.add(1)\nF.relu(x, inplace=False)\n"
    assert _codes(both) == []
    again = run(["."], _settings(fix=True, unsafe_fixes=True))
    assert again.fixes.applied == [] and path.read_text() == "# checkpoint\nx = x.add(1)\nF.relu(x, inplace=False)\n"


def test_diff_does_not_write_and_iterates(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    original = "# checkpoint\nx.add_(1); y.add_(2)\nF.relu(x, inplace=True)\n"
    path.write_text(original)
    result = run([str(path)], _settings(diff=True, unsafe_fixes=True))
    assert path.read_text() == original
    (diff,) = result.fixes.diffs
    assert "+x = x.add(1); y = y.add(2)\n" in diff and "+F.relu(x, inplace=False)\n" in diff
    assert _codes(result) == []  # what would remain after fixing


def test_fix_that_breaks_the_file_is_not_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.py"
    original = "# checkpoint\nF.relu(x, inplace=True)\n"
    path.write_text(original)
    real = fake_engine.analyze_file

    def breaking(project, p, options):  # type: ignore[no-untyped-def]
        res = real(project, p, options)
        bad = []
        for f in res.findings:
            edit = f.fix.edits[0]  # type: ignore[union-attr]
            bad.append(type(f)(**{**f.__dict__, "fix": type(f.fix)("x", "safe", (type(edit)(edit.start_line, edit.start_column, edit.end_line, edit.end_column, "(("),))}))
        return fake_engine.FileResult(res.path, tuple(bad), res.dependencies)

    monkeypatch.setattr(fake_engine, "analyze_file", breaking)
    result = run(["."], _settings(fix=True, use_cache=False))
    assert path.read_text() == original
    assert result.fixes.failures and "would not parse" in result.fixes.failures[0][1]
