"""Data files shipped with the linter, read without importing torch.

``known_classes.toml``: well-known module classes outside the checked tree (see ``ckptlint.infer.known``).

``inplace_pairs.json``: PyTorch's in-place -> out-of-place pairs (``Tensor.add_``
-> ``add``, ``torch.relu_`` -> ``torch.relu``, ``F.elu_`` -> ``F.elu``), each
verified on a real torch by ``tools/inplace_pairs.py`` (and re-verified against
the installed torch by the test suite). A fix that drops a trailing underscore
is offered only for names in it.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

__all__ = ["INPLACE_NAMESPACES", "out_of_place", "out_of_place_names"]

# The module part of a resolved qualified name -> the table's namespace.
INPLACE_NAMESPACES = {"torch.Tensor": "Tensor", "torch": "torch", "torch.nn.functional": "torch.nn.functional"}


@lru_cache(maxsize=1)
def _pairs() -> dict[str, dict[str, str]]:
    text = resources.files(__name__).joinpath("inplace_pairs.json").read_text(encoding="utf-8")
    table = json.loads(text)["pairs"]
    return {ns: {name: entry["outplace"] for name, entry in names.items()} for ns, names in table.items()}


def out_of_place(namespace: str, name: str) -> str | None:
    """The verified out-of-place twin of in-place ``name`` in ``namespace``
    (``"Tensor"`` for methods, ``"torch"``, ``"torch.nn.functional"``), else ``None``."""
    return _pairs().get(namespace, {}).get(name)


@lru_cache(maxsize=None)
def out_of_place_names(namespace: str) -> frozenset[str]:
    """Every verified out-of-place name of ``namespace`` (``add``, ``relu``, ...)."""
    return frozenset(_pairs().get(namespace, {}).values())
