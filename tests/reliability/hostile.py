"""Inputs that have broken linters: mutated real files and hostile trees.

Shared by the fast tests here and by ``benchmarks/soak.py`` (the long run).
Everything is seeded: a failure names the seed that reproduces it.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

__all__ = ["HOSTILE_DRIVER", "Expect", "build_hostile_tree", "mutate", "seed_files"]

REPO = Path(__file__).resolve().parents[2]

HOSTILE_DRIVER = (
    "from torch.utils.checkpoint import checkpoint\n"
    "def f(x):\n"
    "    return checkpoint(g, x, use_reentrant=False)\n"
    "def g(x):\n"
    "    x.add_(1)\n"
    "    return x\n"
)


def seed_files(extra: tuple[Path, ...] = ()) -> list[Path]:
    """The repository's own sources and fixtures (and ``extra`` trees): real code to mutate."""
    roots = (REPO / "ckptlint", REPO / "tests" / "fixtures", REPO / "examples", *extra)
    out: list[Path] = []
    for root in roots:
        if root.is_dir():
            out.extend(sorted(p for p in root.rglob("*.py") if p.is_file() and p.stat().st_size < 400_000))
    return out


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True) or [b""]


def _delete_line(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    del lines[rng.randrange(len(lines))]
    return b"".join(lines)


def _duplicate_line(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    i = rng.randrange(len(lines))
    lines.insert(rng.randrange(len(lines) + 1), lines[i])
    return b"".join(lines)


def _swap_lines(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return b"".join(lines)


def _truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data) + 1)]


def _insert_bytes(data: bytes, rng: random.Random) -> bytes:
    junk = rng.choice([b"(", b")", b"[", b"]", b"{", b":", b"\\", b"'", b'"""', b"\t", b"\x00", b"\xff", b"\xe9",
                       b"\r", b"\x1b[2J", b"lambda: ", b"async ", b"yield ", b"*", b"**", b"@", b"\n    ", b"#"])
    i = rng.randrange(len(data) + 1)
    return data[:i] + junk + data[i:]


def _reindent(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    i = rng.randrange(len(lines))
    lines[i] = rng.choice([b"", b" ", b"    ", b"\t"]) + lines[i].lstrip()
    return b"".join(lines)


def _deepen(data: bytes, rng: random.Random) -> bytes:
    depth = rng.choice([50, 120, 199, 201, 1300])
    line = b"_deep = " + b"(" * depth + b"1" + b")" * depth + b"\n"
    lines = _lines(data)
    lines.insert(rng.randrange(len(lines) + 1), line)
    return b"".join(lines)


def _splice(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    a, b = sorted((rng.randrange(len(lines) + 1), rng.randrange(len(lines) + 1)))
    return b"".join(lines[:a] + lines[b:] + lines[a:b])


MUTATIONS: tuple[Callable[[bytes, random.Random], bytes], ...] = (
    _delete_line, _duplicate_line, _swap_lines, _truncate, _insert_bytes, _reindent, _deepen, _splice,
)


def mutate(data: bytes, rng: random.Random, rounds: int = 3) -> bytes:
    """``data`` after 1..``rounds`` random edits from :data:`MUTATIONS`."""
    for _ in range(rng.randint(1, rounds)):
        data = rng.choice(MUTATIONS)(data, rng)
    return data


@dataclass(frozen=True)
class Expect:
    """What the run must say about one hostile path: a finding code, or a stderr line."""

    path: str
    code: str | None = None  # CKP001 / CKP003 / CKP101 ...
    stderr: str | None = None  # a fragment of the one-line message


def build_hostile_tree(root: Path, *, drivers: int = 6) -> list[Expect]:
    """Every hostile case of issue 11 in one tree under ``root``; what the run must report.

    ``root/pyproject.toml`` sets ``max-file-bytes`` low so that the "huge"
    file stays small enough for CI.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / ".git").mkdir(exist_ok=True)
    (root / "pyproject.toml").write_text("[tool.ckptlint]\nmax-file-bytes = 300000\n")
    expects: list[Expect] = []
    pkg = root / "pkg"
    pkg.mkdir(exist_ok=True)
    for i in range(drivers):
        (pkg / f"m{i}.py").write_text(HOSTILE_DRIVER)
        expects.append(Expect(f"pkg/m{i}.py", "CKP101"))
    # Symlink loops: each file once, two loops stay linear.
    (pkg / "self").symlink_to(".")
    (pkg / "up").symlink_to("..")
    (root / "legacy_models").symlink_to("pkg")
    (root / "alias.py").symlink_to("pkg/m0.py")
    # Deep nesting: rejected by Python (CKP001), accepted but too deep for libcst (CKP003).
    (root / "deep_parens.py").write_text("x = " + "(" * 1300 + "1" + ")" * 1300 + "\n")
    expects.append(Expect("deep_parens.py", "CKP001"))
    (root / "deep_ok.py").write_text(
        HOSTILE_DRIVER.replace("x.add_(1)", "x.add_(" + "[" * 150 + "1" + "]" * 150 + ")")
    )
    expects.append(Expect("deep_ok.py", "CKP003"))
    chain = " + ".join(["x"] * 3000)
    (root / "deep_chain.py").write_text(f"import torch.utils.checkpoint\ny = {chain}\n")
    expects.append(Expect("deep_chain.py", "CKP001"))
    # Huge file (over max-file-bytes): not even read.
    with open(root / "huge.py", "w") as fh:
        fh.write("from torch.utils.checkpoint import checkpoint\nT = [\n")
        fh.write(("1234567, " * 10 + "\n") * 4000)
        fh.write("]\n")
    expects.append(Expect("huge.py", "CKP003"))
    # Encodings and bytes Python refuses.
    (root / "latin1.py").write_bytes(b"x = '\xe9'\n")
    expects.append(Expect("latin1.py", "CKP001"))
    (root / "nul.py").write_bytes(b"x = 1\x00\n")
    expects.append(Expect("nul.py", "CKP001"))
    (root / "bad_cookie.py").write_bytes(b"# -*- coding: nope -*-\nx = 1\n")
    expects.append(Expect("bad_cookie.py", "CKP001"))
    # Odd names: undecodable bytes, a newline, an escape sequence.
    odd = os.fsencode(root / "odd")
    os.mkdir(odd)
    for name in (b"caf\xe9.py", b"new\nline.py", b"esc\x1b[2J.py"):
        with open(os.path.join(odd, name), "wb") as fh:
            fh.write(HOSTILE_DRIVER.encode())
        shown = "odd/" + os.fsdecode(name)
        expects.append(Expect(shown, "CKP101"))
    # Terminal injection in a source line.
    (root / "inject.py").write_text(HOSTILE_DRIVER.replace("x.add_(1)", "x.add_(1)  # \x1b]0;pwned\x07\x1b[2J"))
    expects.append(Expect("inject.py", "CKP101"))
    # A broken .gitignore, a dangling link, an unreadable folder, a symlinked cache.
    (root / ".gitignore").write_text("[]\n[z-a]\n*.pyc\n")
    expects.append(Expect(".gitignore", stderr="pattern '[z-a]' ignored"))
    (root / "gone.py").symlink_to("does-not-exist.py")
    expects.append(Expect("gone.py", stderr="cannot read"))
    secret = root / "secret"
    secret.mkdir()
    (secret / "s.py").write_text(HOSTILE_DRIVER)
    secret.chmod(0)
    if os.geteuid() != 0:  # root reads it anyway
        expects.append(Expect("secret", stderr="cannot read directory"))
    else:
        expects.append(Expect("secret/s.py", "CKP101"))
    elsewhere = root / "cache_target"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("not yours\n")
    (root / ".ckptlint_cache").symlink_to("cache_target")
    expects.append(Expect(".ckptlint_cache", stderr="is a symlink"))
    return expects


def iter_examples(seeds: list[Path], rng: random.Random) -> Iterator[tuple[str, bytes]]:
    """Endless (seed name, mutated bytes) pairs."""
    while True:
        seed = rng.choice(seeds)
        yield seed.name, mutate(seed.read_bytes(), rng)
