"""The rules: one module per code, collected into :data:`ALL_RULES`.

Each module exposes ``CODE``, ``NAME``, ``MESSAGE``, ``EVENT`` (and
optionally ``EVENTS``), ``check``, ``VALID``, ``INVALID`` and a docstring
(what, why it breaks checkpointing, how to fix, example) that
``ckptlint rule CODE`` prints. Other parts of ckptlint (e.g. suppressions'
CKP002) add their documentation-only rules with :func:`register`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["ALL_RULES", "RULES_BY_CODE", "register", "rule_doc"]

_MODULES = (
    "ckp001_syntax_error",
    "ckp003_not_checked",
    "ckp101_inplace_method_on_input",
    "ckp102_augmented_assignment_on_input",
    "ckp103_item_assignment_on_input",
    "ckp104_out_argument_is_input",
    "ckp105_inplace_functional_on_input",
    "ckp106_inplace_module_on_input",
    "ckp107_input_container_mutated",
    "ckp201_state_write",
    "ckp202_global_write",
    "ckp203_outer_container_mutation",
    "ckp204_batchnorm_running_stats",
    "ckp205_torch_global_setter",
    "ckp206_hook_state_write",
    "ckp207_outer_tracker_update",
    "ckp208_use_cache_under_checkpoint",
    "ckp301_python_random",
    "ckp302_numpy_random",
    "ckp303_explicit_generator",
    "ckp304_reseed",
    "ckp305_rng_not_preserved",
    "ckp401_missing_use_reentrant",
    "ckp402_reentrant_with_kwargs",
    "ckp403_reentrant_no_grad_inputs",
    "ckp404_reentrant_under_ddp",
    "ckp405_sac_cache_mutation",
    "ckp501_lone_cheap_op",
    "ckp502_checkpoint_without_grad",
    "ckp503_checkpointed_output_region",
    "ckp504_doubled_checkpointing",
)

ALL_RULES: list[ModuleType] = sorted(
    (importlib.import_module(f"{__name__}.{m}") for m in _MODULES), key=lambda m: m.CODE
)
RULES_BY_CODE: dict[str, ModuleType] = {m.CODE: m for m in ALL_RULES}


def register(module: ModuleType) -> None:
    """Add a rule module (needs CODE, NAME, MESSAGE and a docstring); keeps order."""
    if module.CODE in RULES_BY_CODE:
        return
    RULES_BY_CODE[module.CODE] = module
    ALL_RULES.append(module)
    ALL_RULES.sort(key=lambda m: m.CODE)


def rule_doc(module: ModuleType) -> str:
    """The rule's documentation text (its module docstring)."""
    return (module.__doc__ or "").strip()
