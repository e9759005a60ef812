"""--fix/--unsafe-fixes on every fixture and example, with the real engine.

Three properties per corpus entry (issue 3, item 4): every fixed file
re-parses and compiles, a second fix run changes nothing, and the fixed findings are gone
(nothing fixable remains; what remains was already reported before fixing).
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import libcst
import pytest

from ckptlint.config import Config
from ckptlint.runner import RunSettings, run

REPO = Path(__file__).resolve().parents[2]


def _corpus() -> list[Path]:
    entries: list[Path] = []
    fixtures = REPO / "tests" / "fixtures"
    if fixtures.is_dir():
        entries += sorted(p for p in fixtures.iterdir() if p.suffix == ".py" or (p.is_dir() and p.name != "__pycache__"))
    examples = REPO / "examples"
    if examples.is_dir():
        entries.append(examples)
    return entries


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.py"))}


def _assert_formatting_kept(before: bytes, after: bytes) -> None:
    """Fixes rewrite expressions in place: no line is added or removed and
    every line keeps its indentation (formatting outside the edit survives)."""
    old, new = before.splitlines(), after.splitlines()
    assert len(old) == len(new), "a fix added or removed lines"
    for a, b in zip(old, new):
        if a != b:
            indent_a = a[: len(a) - len(a.lstrip())]
            indent_b = b[: len(b) - len(b.lstrip())]
            assert indent_a == indent_b, f"indentation changed: {a!r} -> {b!r}"


def _compiles(data: bytes, name: str) -> bool:
    try:
        compile(data, name, "exec", dont_inherit=True)
    except SyntaxError:
        return False
    return True


def _key(findings: list) -> Counter:
    return Counter((f.path, f.code, f.callable) for f in findings)


@pytest.mark.parametrize("entry", _corpus(), ids=lambda p: p.name)
def test_fix_properties(entry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "w"
    work.mkdir()
    if entry.is_dir():
        shutil.copytree(entry, work / entry.name, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        shutil.copy(entry, work / entry.name)
    monkeypatch.chdir(work)
    settings = dict(config=Config(root=str(work)), use_cache=False, jobs=1)
    before = run([entry.name], RunSettings(**settings))
    fixable = [f for f in before.findings if f.fix is not None]
    original = _snapshot(work)

    fixed = run([entry.name], RunSettings(fix=True, unsafe_fixes=True, **settings))
    after = _snapshot(work)
    assert fixed.fixes is not None
    # A file newer than this Python (PEP 695 under 3.11) cannot be verified by
    # compile(), so its fixes are refused with a message; nothing else may fail.
    unverifiable = {rel for rel, data in original.items() if not _compiles(data, rel)}
    assert all(Path(p).as_posix() in unverifiable for p, _ in fixed.fixes.failures), fixed.fixes.failures
    fixable = [f for f in fixable if f.path not in unverifiable]
    changed = [p for p in after if after[p] != original.get(p)]
    if fixable:
        assert changed, "findings carried fixes but no file changed"
    for rel in changed:
        libcst.parse_module(after[rel])  # 1. every fixed file re-parses (bytes: honours the coding cookie)
        assert _compiles(after[rel], rel), rel  # ... and Python's own compiler accepts it
        _assert_formatting_kept(original[rel], after[rel])

    again = run([entry.name], RunSettings(fix=True, unsafe_fixes=True, **settings))
    assert again.fixes is not None and again.fixes.applied == []  # 2. idempotent
    assert _snapshot(work) == after

    # 3. fixed findings are gone: nothing fixable remains, nothing new appeared
    assert [f for f in again.findings if f.fix is not None and f.path not in unverifiable] == []
    assert not (_key(again.findings) - _key(before.findings)), _key(again.findings) - _key(before.findings)
    assert sum(_key(before.findings).values()) - sum(_key(again.findings).values()) >= len(
        {f.fix for f in fixable}
    ) or not fixable


def test_corpus_is_not_empty() -> None:
    assert _corpus(), "no fixtures or examples found"
