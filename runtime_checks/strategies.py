"""Hypothesis strategies for model inputs: tensors with shared symbolic dimensions.

``tensors(shape=("B", "T", 64))`` draws a tensor whose ``B`` and ``T`` are
shared with every other tensor drawn with the same names in the same example,
so ``inputs(tensors(shape=("B", 16)), tensors(shape=("B",), dtype=torch.int64))``
always gives matching batch sizes. By default values come from a seeded
``torch.randn`` (one drawn seed, not one draw per element), which keeps large
tensors cheap and lets hypothesis shrink the shape to its minimum and the
seed to 0.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

__all__ = ["DEFAULT_DIM_BOUNDS", "inputs", "parse_input_spec", "tensors"]

DEFAULT_DIM_BOUNDS = (1, 8)


def _dim_strategy(name: str, bounds: tuple[int, int]) -> SearchStrategy[int]:
    lo, hi = bounds
    # One shared draw per name per example: every tensor naming "B" gets the same B.
    return st.shared(st.integers(min_value=lo, max_value=hi), key=f"ckptlint-dim-{name}")


def tensors(
    *,
    shape: Sequence[int | str],
    dtype: torch.dtype = torch.float32,
    elements: SearchStrategy[Any] | tuple[float, float] | None = None,
    requires_grad: bool | Literal["either"] = False,
    dims: Mapping[str, tuple[int, int]] | None = None,
    device: str | torch.device = "cpu",
) -> SearchStrategy[torch.Tensor]:
    """A strategy for tensors of ``shape`` (ints or dimension names) and ``dtype``.

    ``dims`` bounds named dimensions, e.g. ``{"B": (1, 4)}`` (default
    ``(1, 8)``); give the same bounds wherever a name recurs.
    ``elements``: ``None`` (standard normal for floating dtypes, ``{0, 1}``
    for integer and bool), a ``(low, high)`` range (uniform; integers in
    ``[low, high)``), or a hypothesis strategy drawn per element (slow for
    big tensors, but shrinks values too).
    ``requires_grad="either"`` draws it per example: the search then covers
    the frozen-inputs regime too — region inputs that do not require grad, as
    with frozen embeddings or a PEFT-style frozen base, where reentrant
    checkpoint silently drops the gradients of the parameters inside.
    """
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
        raise TypeError(f"shape must be a sequence of ints and dimension names, got {shape!r}")
    bounds = dict(dims or {})
    dim_strats: list[SearchStrategy[int]] = []
    for entry in shape:
        if isinstance(entry, bool) or not isinstance(entry, (int, str)):
            raise TypeError(f"shape entries must be ints or names, got {entry!r} in {shape!r}")
        if isinstance(entry, int):
            if entry < 0:
                raise ValueError(f"negative dimension {entry} in shape {shape!r}")
            dim_strats.append(st.just(entry))
        else:
            lo, hi = bounds.get(entry, DEFAULT_DIM_BOUNDS)
            if not 0 <= lo <= hi:
                raise ValueError(f"bounds for dimension {entry!r} must satisfy 0 <= low <= high, got {(lo, hi)!r}")
            dim_strats.append(_dim_strategy(entry, (lo, hi)))
    if requires_grad not in (True, False, "either"):
        raise ValueError(f"requires_grad must be True, False or 'either', got {requires_grad!r}")
    if requires_grad and not (dtype.is_floating_point or dtype.is_complex):
        raise ValueError(f"requires_grad={requires_grad!r} needs a floating dtype, got {dtype}")

    @st.composite
    def draw(draw_fn: Any) -> torch.Tensor:
        size = tuple(draw_fn(s) for s in dim_strats)
        numel = 1
        for d in size:
            numel *= d
        if elements is None or isinstance(elements, tuple):
            seed = draw_fn(st.integers(min_value=0, max_value=2**32 - 1))
            g = torch.Generator().manual_seed(seed)
            if dtype.is_floating_point or dtype.is_complex:
                if elements is None:
                    t = torch.randn(size, generator=g, dtype=torch.float64)
                else:
                    lo, hi = elements
                    t = torch.rand(size, generator=g, dtype=torch.float64) * (hi - lo) + lo
            elif dtype == torch.bool:
                t = torch.randint(0, 2, size, generator=g).bool()
            else:
                lo, hi = (0, 2) if elements is None else (int(elements[0]), int(elements[1]))
                t = torch.randint(lo, hi, size, generator=g, dtype=torch.int64)
        else:
            values = draw_fn(st.lists(elements, min_size=numel, max_size=numel))
            t = torch.tensor(values, dtype=torch.float64 if dtype.is_floating_point else None).reshape(size)
        t = t.to(dtype=dtype, device=device)
        # Drawn last, so shrinking prefers the frozen regime (False) once found.
        grad = draw_fn(st.booleans()) if requires_grad == "either" else requires_grad
        if grad:
            t.requires_grad_(True)
        return t

    return draw()


def inputs(*args_strategies: Any, **kwargs_strategies: Any) -> SearchStrategy[Any]:
    """Model inputs: positional strategies give a tuple, keyword strategies a dict.

    Plain values are passed through unchanged. ``verify`` takes either form,
    so mixing positional and keyword inputs is refused.
    """
    if args_strategies and kwargs_strategies:
        raise TypeError("inputs(): give positional strategies or keyword strategies, not both")

    def lift(v: Any) -> SearchStrategy[Any]:
        return v if isinstance(v, SearchStrategy) else st.just(v)

    if kwargs_strategies:
        return st.fixed_dictionaries({k: lift(v) for k, v in kwargs_strategies.items()})
    return st.tuples(*(lift(v) for v in args_strategies))


_DTYPES: dict[str, torch.dtype] = {
    name: getattr(torch, name)
    for name in (
        "float16", "bfloat16", "float32", "float64", "half", "float", "double",
        "int8", "int16", "int32", "int64", "uint8", "long", "int", "bool",
    )
}
_SPEC = re.compile(
    r"^\s*(?:(?P<name>[A-Za-z_]\w*)\s*=\s*)?(?P<dtype>\w+)\s*\[(?P<dims>[^\]]*)\]"
    r"(?P<range>\s*:\s*-?[\d.e+-]+\s*:\s*-?[\d.e+-]+)?(?P<grad>\s*\+\s*grad)?\s*$"
)


def parse_input_spec(
    spec: str, dims: Mapping[str, tuple[int, int]] | None = None
) -> tuple[str | None, SearchStrategy[torch.Tensor]]:
    """Parse a CLI input spec: ``[name=]dtype[dims][:low:high][+grad]``.

    ``float32[B,16]``, ``x=float32[B,T,64]+grad``, ``input_ids=int64[B,T]:0:1000``.
    Returns the keyword name (or None for positional) and the strategy.
    Raises ``ValueError`` with a one-line message on a bad spec.
    """
    m = _SPEC.match(spec)
    if not m:
        raise ValueError(f"bad --input {spec!r}: expected e.g. 'float32[B,16]', 'x=float32[B,T,64]+grad', 'ids=int64[B,T]:0:1000'")
    dtype_name = m.group("dtype")
    if dtype_name not in _DTYPES:
        raise ValueError(f"bad --input {spec!r}: unknown dtype {dtype_name!r} (one of {', '.join(sorted(_DTYPES))})")
    shape: list[int | str] = []
    for part in (p.strip() for p in m.group("dims").split(",")):
        if not part:
            continue
        if part.isdigit():
            shape.append(int(part))
        elif re.fullmatch(r"[A-Za-z_]\w*", part):
            shape.append(part)
        else:
            raise ValueError(f"bad --input {spec!r}: dimension {part!r} is neither an int nor a name")
    rng: tuple[float, float] | None = None
    if m.group("range"):
        lo_s, hi_s = (x.strip() for x in m.group("range").split(":")[1:])
        rng = (float(lo_s), float(hi_s))
    dtype = _DTYPES[dtype_name]
    grad = bool(m.group("grad"))
    try:
        strategy = tensors(shape=shape, dtype=dtype, elements=rng, requires_grad=grad, dims=dims)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad --input {spec!r}: {exc}") from None
    return m.group("name"), strategy
