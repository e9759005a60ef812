"""Generate ``ckptlint/data/inplace_pairs.json``: PyTorch's real in-place -> out-of-place pairs.

The CKP101 fix rewrites ``x.add_(y)`` as ``x = x.add(y)`` and
``torch.relu_(x)`` as ``x = torch.relu(x)``. Dropping the underscore is only
right when the name without it exists *and* computes the same value without
touching its input: ``clip_grad_norm_`` returns the norm, ``Tensor.apply_``
and ``map_`` have no twin, ``nn.init.trunc_normal`` does not exist. So the
linter (which never imports torch) ships this table, made here by asking the
installed torch, and offers the rewrite only for names in it.

A pair is kept when, for some receiver kind and argument pattern below, on
two different small tensors: both calls succeed, the out-of-place call leaves
its receiver and arguments unchanged, and returns a tensor equal (values,
shape, dtype) to what the in-place call left in its receiver, and the
in-place call changes at least one of the two receivers. The probe that
passed is recorded with the pair, and tests/cli_features/test_fix_pairs.py
replays every recorded probe against the installed torch.

Namespaces: ``Tensor`` methods, ``torch`` functions, ``torch.nn.functional``
functions. Run it (CPU torch is enough) after a torch upgrade and commit the
result::

    python tools/inplace_pairs.py            # rewrites ckptlint/data/inplace_pairs.json
    python tools/inplace_pairs.py --check    # exit 1 when the file is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

__all__ = ["NAMESPACES", "RECEIVERS", "PATTERNS", "generate", "probe"]

OUT = Path(__file__).resolve().parents[1] / "ckptlint" / "data" / "inplace_pairs.json"

# Table key -> the object whose attributes are probed. ``Tensor`` pairs are
# methods (the receiver is ``self``); the others are functions whose first
# positional argument is the tensor they mutate.
NAMESPACES: dict[str, Any] = {"Tensor": torch.Tensor, "torch": torch, "torch.nn.functional": F}

# Two different receivers per kind, so that an op that happens to leave one
# input unchanged (``clamp_`` inside the range) cannot pass by coincidence.
RECEIVERS: dict[str, tuple[Callable[[], torch.Tensor], ...]] = {
    "unit": (
        lambda: torch.tensor([[0.2, 0.5, 0.9], [0.3, 0.7, 0.4]]),
        lambda: torch.tensor([[0.15, 0.85, 0.6], [0.45, 0.25, 0.35]]),
    ),
    "signed": (
        lambda: torch.tensor([[-1.5, 0.5, 2.0], [0.25, -0.75, 3.0]]),
        lambda: torch.tensor([[2.5, -0.5, -2.0], [-0.25, 1.75, -3.0]]),
    ),
    "above_one": (
        lambda: torch.tensor([[1.2, 1.5, 2.9], [3.3, 1.7, 2.4]]),
        lambda: torch.tensor([[1.15, 2.85, 1.6], [2.45, 1.25, 4.35]]),
    ),
    "long": (
        lambda: torch.tensor([[1, 2, 3], [4, 5, 6]]),
        lambda: torch.tensor([[6, 3, 9], [2, 7, 4]]),
    ),
    "bool": (
        lambda: torch.tensor([[True, False, True], [False, True, True]]),
        lambda: torch.tensor([[False, False, True], [True, True, False]]),
    ),
}

# Argument patterns, one letter per positional argument:
# T tensor like the receiver, S scalar, B bool mask, D the int 0, E the int 1,
# V long index vector over dim 0, L long (2, 3) index tensor into dim 0.
PATTERNS = ("", "T", "S", "D", "E", "T,T", "T,S", "S,S", "B,S", "B,T", "D,E", "D,V,T", "D,V,S", "D,L,T", "D,L,S")


def _atom(code: str, like: torch.Tensor) -> Any:
    if code == "T":
        base = torch.tensor([[0.3, 0.6, 0.8], [0.5, 0.2, 0.9]])
        if like.dtype == torch.bool:
            return base > 0.5
        if not like.dtype.is_floating_point:
            return torch.tensor([[2, 3, 1], [1, 2, 3]], dtype=like.dtype)
        return base.to(like.dtype)
    if code == "S":
        return 2 if not like.dtype.is_floating_point else 0.5
    if code == "B":
        return torch.tensor([[True, False, False], [False, True, False]])
    if code == "D":
        return 0
    if code == "E":
        return 1
    if code == "V":
        return torch.tensor([1, 0])
    if code == "L":
        return torch.tensor([[0, 1, 0], [1, 0, 1]])
    raise ValueError(f"unknown argument code {code!r}")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.dtype.is_floating_point or a.dtype.is_complex:
            return bool(torch.allclose(a, b, equal_nan=True))
        return bool(torch.equal(a, b))
    return type(a) is type(b) and a == b


def _copy(v: Any) -> Any:
    return v.clone() if isinstance(v, torch.Tensor) else v


def probe(namespace: str, inplace: str, outplace: str, receiver: str, args: str) -> str | None:
    """``None`` when the pair computes the same value without mutating, else why not."""
    owner = NAMESPACES[namespace]
    codes = [c for c in args.split(",") if c]
    changed = False
    for make in RECEIVERS[receiver]:
        x = make()
        arg_values = [_atom(c, x) for c in codes]
        a = x.clone()
        b = x.clone()
        before = [_copy(v) for v in arg_values]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                torch.manual_seed(0)
                if namespace == "Tensor":
                    getattr(a, inplace)(*[_copy(v) for v in arg_values])
                else:
                    getattr(owner, inplace)(a, *[_copy(v) for v in arg_values])
                torch.manual_seed(0)
                if namespace == "Tensor":
                    out = getattr(b, outplace)(*arg_values)
                else:
                    out = getattr(owner, outplace)(b, *arg_values)
            except Exception as exc:  # the pattern does not fit the op
                return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if not isinstance(out, torch.Tensor):
            return f"{outplace} returns {type(out).__name__}, not a tensor"
        if not _same(b, x):
            return f"{outplace} mutates its input"
        if not all(_same(v, w) for v, w in zip(arg_values, before)):
            return f"{outplace} mutates an argument"
        if not _same(out, a):
            return f"{outplace} computes something else than {inplace}"
        changed = changed or not _same(a, x)
    # An op that left both receivers as they were (``clamp_`` inside the
    # range, ``resize_as_`` to the same shape) proves nothing about its twin.
    return None if changed else f"{inplace} changed neither receiver: no evidence"


def _candidates() -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    for namespace, owner in NAMESPACES.items():
        for name in sorted(dir(owner)):
            if name.endswith("_") and not name.startswith("_") and not name.endswith("__"):
                twin = name[:-1]
                if callable(getattr(owner, name, None)) and callable(getattr(owner, twin, None)):
                    out.append((namespace, name, twin))
    return out


def generate() -> dict[str, Any]:
    """The table: per namespace, in-place name -> {out-of-place name, the probe that passed}."""
    table: dict[str, dict[str, dict[str, str]]] = {ns: {} for ns in NAMESPACES}
    for namespace, name, twin in _candidates():
        for receiver in RECEIVERS:
            found = next((p for p in PATTERNS if probe(namespace, name, twin, receiver, p) is None), None)
            if found is not None:
                table[namespace][name] = {"outplace": twin, "receiver": receiver, "args": found}
                break
    return {
        "about": "In-place -> out-of-place pairs verified on torch by tools/inplace_pairs.py; do not edit by hand.",
        "torch": torch.__version__.split("+")[0],
        "pairs": table,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the committed table differs")
    args = parser.parse_args(argv)
    table = generate()
    text = json.dumps(table, indent=1, sort_keys=True) + "\n"
    if args.check:
        current = json.loads(OUT.read_text(encoding="utf-8")) if OUT.exists() else None
        if current is None or current["pairs"] != table["pairs"]:
            print(f"{OUT} is out of date for torch {table['torch']}; rerun tools/inplace_pairs.py", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    counts = ", ".join(f"{ns}: {len(v)}" for ns, v in table["pairs"].items())
    print(f"wrote {OUT} ({counts}; torch {table['torch']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
