"""Run the linter over the fixture corpus in ``tests/fixtures/`` and compare with inline expectations.

A fixture is one ``.py`` file directly in ``tests/fixtures/`` or one directory there (a small package
tree for cross-file cases). Each fixture is linted as its own root with ``ckptlint.engine.lint``.

Expectations sit in a comment on the line where a finding starts::

    x.add_(1)  # expect: CKP101
    x += y  # expect: CKP102, CKP101
    mask.masked_fill_(m, 0)  # expect: CKP101@Layer.forward

``@name`` pins the checkpointed callable the finding must name. The harness compares the exact multiset
of (relative path, line, code[, callable]): a missing finding fails, an extra finding fails. Fixtures
named ``benign_*`` carry no expectations and must produce no findings at all. Fixtures named
``syntax_error_*`` do not parse.

Beyond the per-fixture comparison: every finding must name its callable and a real checkpoint site;
the corpus must cover every rule code, discovery shape and benign lookalike of issue 2; the results must
not change under another spelling of the checkpoint import, when the whole corpus is linted as one tree,
or under another ``PYTHONHASHSEED``. See docs/fixtures.md.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libcst
import pytest

FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"

# `# expect: CKP101, CKP201@Block.forward` -- the comment must be the last thing on the line.
_EXPECT_RE = re.compile(r"#\s*expect:\s*(?P<items>[^#]*?)\s*$")
_ITEM_RE = re.compile(r"^(?P<code>CKP\d{3})(?:@(?P<callable>[A-Za-z_][\w.<>]*))?$")

# Codes that the engine's ``lint()`` cannot produce by design, so no fixture can expect them:
# CKP002 (unused suppression) is computed by the suppression layer on top of the engine (issue 3).
CODES_OUTSIDE_ENGINE = frozenset({"CKP002"})

# Every discovery shape of issue 2 item 2 -> the fixture whose hazard is only found if that shape is
# discovered. Checked by ``test_every_discovery_shape_has_a_fixture``; benign shapes (where the right
# answer is "nothing is checkpointed") point at ``benign_*`` fixtures.
DISCOVERY_SHAPES: dict[str, str] = {
    "import torch.utils.checkpoint as cp": "import_module_as_cp.py",
    "from torch.utils import checkpoint as m; m.checkpoint": "import_from_utils_module.py",
    "from torch.utils.checkpoint import checkpoint as ckpt": "import_function_alias.py",
    "torch.utils.checkpoint.checkpoint (full path)": "import_full_path.py",
    "function": "shape_function.py",
    "bound method self.block_fn": "shape_bound_method.py",
    "module instance from __init__ (self.layer = Block(...))": "shape_init_module_instance.py",
    "nn.ModuleList([Block(d) for ...]) + loop variable": "shape_modulelist_loop.py",
    "for i, layer in enumerate(self.layers)": "shape_modulelist_enumerate.py",
    "nn.Sequential(...)": "shape_sequential.py",
    "module.__call__": "shape_dunder_call.py",
    "lambda": "shape_lambda.py",
    "functools.partial(fn, ...)": "shape_partial.py",
    "closure factory create_custom_forward(layer)": "shape_closure_factory.py",
    "self._gradient_checkpointing_func = partial(checkpoint, ...)": "shape_gc_func_partial.py",
    "self._gradient_checkpointing_func assigned outside the tree (diffusers)": "shape_gc_func_diffusers.py",
    "checkpoint_sequential: earlier segment flagged, last segment not": "shape_checkpoint_sequential.py",
    "checkpoint_sequential with segments=1 checkpoints nothing": "benign_checkpoint_sequential_one_segment.py",
    "timm checkpoint_seq(self.blocks, x)": "shape_timm_checkpoint_seq.py",
    "timm checkpoint_seq(..., skip_last=True) leaves the last module out": "shape_timm_checkpoint_seq_skip_last.py",
    "timm checkpoint_seq over stages from a local list, blocks two levels down": "timm_stages_list_built.py",
    "timm checkpoint re-export": "shape_timm_checkpoint.py",
    "checkpoint_wrapper(Block(...))": "shape_checkpoint_wrapper.py",
    "apply_activation_checkpointing(check_fn=lambda m: isinstance(m, Block))": (
        "shape_apply_activation_checkpointing.py"
    ),
    "GradientCheckpointingLayer subclass (direct)": "shape_gcl_direct.py",
    "GradientCheckpointingLayer subclass (indirect, intermediate base)": "shape_gcl_indirect.py",
    "GradientCheckpointingLayer base imported relatively inside transformers": "gcl_relative_import",
    "cross-file class: from .blocks import Block": "crossfile_relative_import",
    "cross-file class: from pkg.blocks import Block": "crossfile_absolute_import",
    "helper chain: self._helper(x) and a function in another file": "helper_chain",
    "team wrapper def my_ckpt(fn, *a): return checkpoint(fn, *a, ...)": "shape_team_wrapper.py",
    # Beyond the list: shapes mined from the zoo and torch 2.14.
    "wrapper checkpointing module.__call__; closure with captured extra args": "shape_closure_factory_extra_args.py",
    "torch 2.14 @checkpoint(use_reentrant=False) decorator and curried form": "shape_decorator_torch214.py",
    "diffusers zip(self.attentions, self.resnets[1:]), self.resnets[0], list + append": (
        "shape_diffusers_zip_index.py"
    ),
    "factory function returning one of several block classes (get_up_block)": "factory_built_blocks.py",
    "inherited forward, super().forward(), conditional construction": "inheritance_forward.py",
    "two classes with one name in two files": "crossfile_same_class_name",
    "options bound in partial(checkpoint, use_reentrant=..., preserve_rng_state=...)": (
        "checkpoint_options_via_partial.py"
    ),
    "torch modules inside a checkpointed nn.Sequential literal": "sequential_of_torch_modules.py",
    "timm block_fn=Block default, nn.Sequential(*[block_fn(...) for ...])": "shape_timm_block_fn_default.py",
    "stage builder returning (name, nn.Sequential(*blocks)) pairs + self.add_module(*stage), to_ntuple, dict(block=...)": (
        "shape_stage_builder_named_stages.py"
    ),
    "the same stage builder building GroupNorm blocks (benign twin)": "benign_stage_builder_groupnorm.py",
    "builder object __call__ + helper method + string-keyed norm factory, constant-key dict lookup": (
        "shape_builder_object_norm_factory.py"
    ),
    "nn.Sequential attribute called directly; Residual(nn.Sequential(...)) constructor argument bound": (
        "shape_sequential_attribute_called.py"
    ),
    "add_module(f'b{i}', ...) / setattr(self, name, ...) + self.children(); track_running_stats=False twin": (
        "shape_children_computed_names.py"
    ),
    "policies: ModuleWrapPolicy({Block}), torchtune set_activation_checkpointing, Lightning FSDPStrategy": (
        "shape_checkpoint_policies.py"
    ),    "known out-of-tree classes: torchvision Conv2dNormActivation, mmcv ConvModule(norm_cfg=...)": (
        "known_classes_out_of_tree.py"
    ),    "DeepSpeed deepspeed.checkpointing.checkpoint and TransformerEngine te_checkpoint known by default": (
        "shape_known_checkpoint_functions.py"
    ),
}

# Every benign lookalike of issue 2 (items 3 and 5) -> the fixture asserting it is NOT flagged. Checked by
# ``test_every_benign_lookalike_has_a_fixture``: each must be a benign_* fixture (no expectations at all).
BENIGN_LOOKALIKES: dict[str, str] = {
    "rebinding then in-place (x = x + 1; x.add_(1))": "benign_rebinding.py",
    "clones (y = x.clone(); y.add_(1))": "benign_clone.py",
    "fresh intermediates (h = self.fc(x); h.relu_())": "benign_fresh_intermediate.py",
    "hidden_states += residual after hidden_states = self.mlp(hidden_states)": "benign_residual_after_rebinding.py",
    "cache.update() / past_key_values.update() under GradientCheckpointingLayer": "benign_gcl_cache_update.py",
    "act(inplace=i > 0), first activation not in-place": "benign_act_inplace_index.py",
    "parameters plainly not tensors (n: int) mutated": "benign_non_tensor_params.py",
    "in-place in code never checkpointed": "benign_never_checkpointed.py",
    "torch.no_grad() buffer-free code": "benign_no_grad_buffer_free.py",
    "local containers (outs = []; outs.append(h))": "benign_local_containers.py",
    "random used outside any checkpointed callable": "benign_random_outside_checkpoint.py",
    "GroupNorm / LayerNorm / BatchNorm(track_running_stats=False)": "benign_norms.py",
    "dropout under the default preserve_rng_state=True": "benign_dropout_default_rng_state.py",
    "checkpoint_sequential(seq, 1, x)": "benign_checkpoint_sequential_one_segment.py",
    "**kwargs is a fresh dict per call": "benign_kwargs_dict_is_fresh.py",
    "RNG objects created and seeded inside the call": "benign_local_rng_objects.py",
}


@dataclass(frozen=True, order=True)
class Expectation:
    """One expected finding: where it starts, its code, and optionally the callable it names."""

    path: str
    line: int
    code: str
    callable: str | None = None

    def describe(self) -> str:
        pinned = f"@{self.callable}" if self.callable else ""
        return f"{self.path}:{self.line}: {self.code}{pinned}"


def iter_fixtures() -> list[Path]:
    """Every fixture: top-level ``.py`` files and top-level directories, sorted by name."""
    found = []
    for entry in sorted(FIXTURES_DIR.iterdir()):
        if entry.name.startswith((".", "_")):
            continue  # __pycache__, editor droppings
        if entry.is_dir() or entry.suffix == ".py":
            found.append(entry)
    return found


def fixture_root(fixture: Path) -> Path:
    """Paths in expectations are relative to this directory."""
    return fixture if fixture.is_dir() else fixture.parent


def fixture_files(fixture: Path) -> list[Path]:
    """The ``.py`` files a fixture consists of."""
    if fixture.is_dir():
        return sorted(p for p in fixture.rglob("*.py") if "__pycache__" not in p.parts)
    return [fixture]


def parse_expectations(fixture: Path) -> list[Expectation]:
    """Read every ``# expect:`` comment of a fixture; a malformed one is an error in the fixture."""
    root = fixture_root(fixture)
    expectations: list[Expectation] = []
    for file in fixture_files(fixture):
        rel = file.relative_to(root).as_posix()
        # errors="replace": a fixture may be in another declared encoding; comments stay ASCII.
        text_lines = file.read_text(encoding="utf-8", errors="replace").splitlines()
        for lineno, text in enumerate(text_lines, start=1):
            match = _EXPECT_RE.search(text)
            if match is None:
                continue
            items = [item.strip() for item in match.group("items").split(",")]
            for item in items:
                parsed = _ITEM_RE.match(item)
                if parsed is None:
                    raise AssertionError(
                        f"{rel}:{lineno}: malformed expectation {item!r} (want CODE or CODE@Callable, comma-separated)"
                    )
                expectations.append(Expectation(rel, lineno, parsed["code"], parsed["callable"]))
    return expectations


def _relative_finding_path(path: str, root: Path) -> str:
    rel = os.path.relpath(os.path.abspath(path), root)
    return Path(rel).as_posix()


def _source_line(root: Path, rel: str, line: int) -> str:
    try:
        lines = (root / rel).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "<unreadable>"
    return lines[line - 1].strip() if 0 < line <= len(lines) else "<no such line>"


def _key(e: Expectation) -> tuple[str, int, str, str]:
    # callable may be None next to a str at the same place: never compare the two directly.
    return (e.path, e.line, e.code, e.callable or "")


def compare(expected: list[Expectation], findings: Iterable[Any], root: Path) -> list[str]:
    """Match findings against expectations; return human-readable problems (empty when equal)."""
    actual = [
        (
            Expectation(_relative_finding_path(f.path, root), f.line, f.code, f.callable),
            f.message,
        )
        for f in findings
    ]
    unmatched_actual = list(actual)
    missing: list[Expectation] = []
    # Pinned expectations first, so an unpinned one never steals the finding a pinned one needs.
    for exp in sorted(expected, key=lambda e: (e.callable is None, _key(e))):
        for i, (act, _msg) in enumerate(unmatched_actual):
            same_place = (act.path, act.line, act.code) == (exp.path, exp.line, exp.code)
            if same_place and (exp.callable is None or exp.callable == act.callable):
                del unmatched_actual[i]
                break
        else:
            missing.append(exp)
    problems: list[str] = []
    for exp in sorted(missing, key=_key):
        near = [a for a, _ in actual if (a.path, a.line, a.code) == (exp.path, exp.line, exp.code)]
        hint = f" (found it naming callable {near[0].callable!r})" if near and exp.callable else ""
        problems.append(f"MISSING    {exp.describe()}{hint}\n           | {_source_line(root, exp.path, exp.line)}")
    for act, msg in sorted(unmatched_actual, key=lambda pair: (_key(pair[0]), pair[1])):
        problems.append(
            f"UNEXPECTED {act.path}:{act.line}: {act.code} [callable {act.callable!r}]\n"
            f"           | {_source_line(root, act.path, act.line)}\n"
            f"           message: {msg}"
        )
    return problems


def check_finding_shape(findings: Iterable[Any], root: Path) -> list[str]:
    """Structural promises of every finding: a hazard names its callable and a real checkpoint site.

    Issue 2: "Every finding names the checkpointed callable and the call site that checkpoints it
    (path:line)". Positions must be ordered; the statement span must hold the finding's line.
    """
    problems = []
    for f in findings:
        where = f"{_relative_finding_path(f.path, root)}:{f.line}: {f.code}"
        if not (f.line >= 1 and f.column >= 0 and (f.end_line, f.end_column) >= (f.line, f.column)):
            problems.append(f"BAD SPAN   {where}: ({f.line},{f.column})-({f.end_line},{f.end_column})")
        lines = getattr(f, "statement_lines", None)
        if lines is not None and not lines[0] <= f.line <= lines[1]:
            problems.append(f"BAD SPAN   {where}: statement_lines {lines} do not hold the finding line")
        if f.code in ("CKP001", "CKP003"):  # about the file itself: no checkpoint site
            continue
        site = f.checkpoint_site
        if site is None:
            problems.append(f"NO SITE    {where}")
        else:
            site_rel = _relative_finding_path(site.path, root)
            site_file = root / site_rel
            if site_rel.startswith("..") or not site_file.is_file():
                problems.append(f"BAD SITE   {where}: checkpoint_site {site} is not a file of the fixture")
            elif not 1 <= site.line <= len(site_file.read_bytes().splitlines()):
                problems.append(f"BAD SITE   {where}: checkpoint_site line {site.line} is outside {site_rel}")
        if f.code[3] in "123":  # hazard families name the checkpointed callable
            if not f.callable:
                problems.append(f"NO CALLABLE {where}")
            elif f.callable not in f.message:
                problems.append(f"UNNAMED    {where}: message does not name {f.callable!r}: {f.message}")
    return problems


def _lint(paths: list[str]) -> Any:
    try:
        from ckptlint.engine import lint
    except ImportError as exc:  # the engine is being written in parallel: fail loudly, never skip
        pytest.fail(f"ckptlint.engine.lint is not importable yet: {exc!r}", pytrace=False)
    return lint(paths)


def _rule_codes() -> set[str]:
    """Codes in ``ckptlint.rules.ALL_RULES``, whatever container shape the registry uses."""
    try:
        from ckptlint.rules import ALL_RULES
    except ImportError as exc:
        pytest.fail(f"ckptlint.rules.ALL_RULES is not importable yet: {exc!r}", pytrace=False)
    items = ALL_RULES.values() if isinstance(ALL_RULES, dict) else ALL_RULES
    codes: set[str] = set()
    for item in items:
        if isinstance(item, str):
            codes.add(item)
            continue
        code = getattr(item, "CODE", None) or getattr(item, "code", None)
        assert isinstance(code, str), f"rule registry entry without a code: {item!r}"
        codes.add(code)
    if isinstance(ALL_RULES, dict):
        codes |= {k for k in ALL_RULES if isinstance(k, str) and k.startswith("CKP")}
    return codes


FIXTURES = iter_fixtures()


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.name for f in FIXTURES])
def test_fixture(fixture: Path) -> None:
    """The linter finds exactly the expected findings in this fixture, and no internal error."""
    expected = parse_expectations(fixture)
    result = _lint([str(fixture)])
    root = fixture_root(fixture)
    errors = [f"INTERNAL ERROR in {path}:\n{text}" for path, text in result.errors]
    problems = compare(expected, result.findings, root) + check_finding_shape(result.findings, root)
    if errors or problems:
        header = f"fixture {fixture.name}: {len(expected)} expected, {len(result.findings)} found"
        pytest.fail("\n".join([header, *errors, *problems]), pytrace=False)


def test_whole_corpus_in_one_run() -> None:
    """Linting all fixtures as one tree (``ckptlint check tests/fixtures``) gives exactly the union of the
    per-fixture results: same-named classes in different fixtures must not leak into each other."""
    expected = []
    for fixture in FIXTURES:
        prefix = f"{fixture.name}/" if fixture.is_dir() else ""
        expected += [Expectation(prefix + e.path, e.line, e.code, e.callable) for e in parse_expectations(fixture)]
    result = _lint([str(FIXTURES_DIR)])
    errors = [f"INTERNAL ERROR in {path}:\n{text}" for path, text in result.errors]
    problems = compare(expected, result.findings, FIXTURES_DIR)
    if errors or problems:
        header = f"whole corpus: {len(expected)} expected, {len(result.findings)} found"
        pytest.fail("\n".join([header, *errors, *problems]), pytrace=False)


def _all_expectations() -> dict[str, list[Expectation]]:
    return {f.name: parse_expectations(f) for f in FIXTURES}


def test_fixture_kinds_are_consistent() -> None:
    """benign_* fixtures expect nothing; every other fixture expects at least one finding."""
    bad = []
    for name, expectations in _all_expectations().items():
        if name.startswith("benign_") and expectations:
            bad.append(f"{name}: benign fixture carries expectations {[e.describe() for e in expectations]}")
        if not name.startswith("benign_") and not expectations:
            bad.append(f"{name}: no '# expect:' comment (name it benign_* if nothing should be found)")
    assert not bad, "\n".join(bad)


def test_fixtures_have_docstrings() -> None:
    """Each parseable fixture file says what shape, rule or real-world pattern it covers."""
    missing = []
    for fixture in FIXTURES:
        if fixture.name.startswith("syntax_error_"):
            continue
        for file in fixture_files(fixture):
            # libcst, not ast: fixtures may use syntax newer than the running Python (PEP 695).
            module = libcst.parse_module(file.read_bytes())  # bytes: honours a PEP 263 coding line
            if not module.get_docstring():
                missing.append(file.relative_to(FIXTURES_DIR).as_posix())
    assert not missing, f"fixture files without a module docstring: {missing}"


def test_every_rule_code_has_a_fixture() -> None:
    """Every rule in the registry is expected somewhere in the corpus, and no expectation uses an unknown code."""
    codes = _rule_codes()
    expected_codes = {e.code for exps in _all_expectations().values() for e in exps}
    uncovered = sorted(codes - expected_codes - CODES_OUTSIDE_ENGINE)
    unknown = sorted(expected_codes - codes)
    assert not uncovered, f"rule codes no fixture expects: {uncovered}"
    assert not unknown, f"fixtures expect codes that ckptlint.rules.ALL_RULES lacks: {unknown}"


def test_every_discovery_shape_has_a_fixture() -> None:
    """Each discovery shape of issue 2 has its fixture; hazard fixtures really expect a finding."""
    expectations = _all_expectations()
    problems = []
    for shape, name in DISCOVERY_SHAPES.items():
        if name not in expectations:
            problems.append(f"{shape!r}: fixture {name!r} does not exist")
        elif not name.startswith("benign_") and not expectations[name]:
            problems.append(f"{shape!r}: fixture {name!r} expects no finding")
    assert not problems, "\n".join(problems)


def test_every_benign_lookalike_has_a_fixture() -> None:
    """Each benign lookalike of issue 2 has a benign_* fixture (which expects no finding at all)."""
    expectations = _all_expectations()
    problems = []
    for lookalike, name in BENIGN_LOOKALIKES.items():
        if name not in expectations:
            problems.append(f"{lookalike!r}: fixture {name!r} does not exist")
        elif not name.startswith("benign_") or expectations[name]:
            problems.append(f"{lookalike!r}: fixture {name!r} is not a benign_* fixture without expectations")
    assert not problems, "\n".join(problems)


_DUMP_SCRIPT = """
import json, sys
from ckptlint.engine import lint
out = []
for path in sys.argv[1:]:
    result = lint([path])
    out.append([path, [f.to_dict() for f in result.findings], [list(e) for e in result.errors]])
print(json.dumps(out, sort_keys=True, default=str))
"""


def test_findings_do_not_depend_on_hash_seed() -> None:
    """Same corpus, two PYTHONHASHSEED values, byte-identical findings (no set-order leaks)."""
    paths = [str(f) for f in FIXTURES]
    dumps = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run(
            [sys.executable, "-c", _DUMP_SCRIPT, *paths],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        dumps.append(json.loads(proc.stdout))
    differing = [a[0] for a, b in zip(dumps[0], dumps[1]) if a != b]
    assert not differing, f"findings differ between PYTHONHASHSEED=1 and =2 for: {differing}"


_CKPT_IMPORT_RE = re.compile(
    r"^from torch\.utils\.checkpoint import (checkpoint|checkpoint_sequential|checkpoint, checkpoint_sequential)$",
    re.MULTILINE,
)
# Other spellings of the same import: the findings must not change (issue 2 item 2).
IMPORT_VARIANTS = {
    "module-alias": ("import torch.utils.checkpoint as tuc_mod", "tuc_mod"),
    "from-utils": ("from torch.utils import checkpoint as tuc_mod", "tuc_mod"),
    "full-path": ("import torch.utils.checkpoint", "torch.utils.checkpoint"),
}


class _QualifyCheckpointNames(libcst.CSTTransformer):
    """Rewrite uses of the names ``checkpoint``/``checkpoint_sequential`` as ``<prefix>.<name>``.

    Only call targets, decorators and call arguments: the places the fixtures use them. The rewrite
    stays on the same line, so every expectation keeps its line number.
    """

    NAMES = frozenset({"checkpoint", "checkpoint_sequential"})

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def _qualify(self, node: libcst.BaseExpression) -> libcst.BaseExpression:
        if isinstance(node, libcst.Name) and node.value in self.NAMES:
            return libcst.parse_expression(f"{self.prefix}.{node.value}")
        return node

    def leave_Call(self, original_node: libcst.Call, updated_node: libcst.Call) -> libcst.Call:
        return updated_node.with_changes(func=self._qualify(updated_node.func))

    def leave_Arg(self, original_node: libcst.Arg, updated_node: libcst.Arg) -> libcst.Arg:
        return updated_node.with_changes(value=self._qualify(updated_node.value))


IMPORT_FORM_FIXTURES = [
    f
    for f in FIXTURES
    if f.is_file()
    and not f.name.startswith(("syntax_error_", "encoding_"))  # unparsable, or not UTF-8
    # A monkeypatch reaches calls that look ``checkpoint`` up on the module, not a name imported before
    # it: there the spelling is the point.
    and f.name != "shape_checkpoint_monkeypatch.py"
    and _CKPT_IMPORT_RE.search(f.read_text(encoding="utf-8", errors="replace"))
]


@pytest.mark.parametrize("variant", sorted(IMPORT_VARIANTS))
@pytest.mark.parametrize("fixture", IMPORT_FORM_FIXTURES, ids=[f.name for f in IMPORT_FORM_FIXTURES])
def test_fixture_under_other_import_forms(fixture: Path, variant: str, tmp_path: Path) -> None:
    """Metamorphic: respelling ``from torch.utils.checkpoint import checkpoint`` keeps every finding."""
    import_line, prefix = IMPORT_VARIANTS[variant]
    source = fixture.read_text(encoding="utf-8")
    source = _CKPT_IMPORT_RE.sub(import_line, source, count=1)
    rewritten = libcst.parse_module(source).visit(_QualifyCheckpointNames(prefix)).code
    assert rewritten.count("\n") == source.count("\n"), "the rewrite must keep line numbers"
    assert f"{prefix}." in rewritten, "nothing was rewritten"
    copy = tmp_path / fixture.name
    copy.write_text(rewritten, encoding="utf-8")
    expected = parse_expectations(copy)
    result = _lint([str(copy)])
    errors = [f"INTERNAL ERROR in {path}:\n{text}" for path, text in result.errors]
    problems = compare(expected, result.findings, tmp_path)
    if errors or problems:
        header = f"fixture {fixture.name} with `{import_line}`: {len(expected)} expected, {len(result.findings)} found"
        pytest.fail("\n".join([header, *errors, *problems]), pytrace=False)


# Ground truth for the corpus: torch-only fixtures run through the runtime verifier (checkpointed model vs
# the same model with checkpointing bypassed). A fixture whose hazard changes numbers, raises, or leaves
# Python state different must not be equivalent; a benign fixture must be. (fixture, model class in the
# fixture, its constructor arguments, input shapes, claim)
RUNTIME_CASES: list[tuple[str, str, tuple[int, ...], tuple[tuple[int, ...], ...], str]] = [
    ("shape_sequential.py", "Net", (), ((2, 3, 8, 8),), "hazard"),
    ("shape_checkpoint_sequential.py", "Net", (4,), ((2, 4, 8, 8),), "hazard"),
    ("shape_bound_method.py", "GatedBlock", (8,), ((4, 8), (4, 8)), "hazard"),
    ("shape_init_module_instance.py", "Layer", (8, 2), ((2, 3, 8), (2, 3, 3)), "hazard"),
    ("shape_dunder_call.py", "Decoder", (8,), ((2, 3, 8), (2, 5, 8)), "hazard"),
    ("shape_lambda.py", "Mixer", (8,), ((4, 8),), "hazard"),
    ("shape_team_wrapper.py", "Block", (8,), ((4, 8),), "hazard"),
    ("shape_modulelist_loop.py", "Stack", (8, 2), ((4, 8),), "hazard"),
    ("inheritance_forward.py", "Model", (8,), ((2, 3, 8),), "hazard"),
    ("rule_ckp105_inplace_functional.py", "Net", (4,), ((2, 4, 8, 8), (2, 4, 8, 8)), "hazard"),
    ("rule_ckp106_inplace_module.py", "Net", (4,), ((2, 4, 8, 8), (2, 4, 8, 8)), "hazard"),
    ("rule_ckp305_rng_not_preserved.py", "Model", (8,), ((4, 8),), "hazard"),
    ("drop_path_rng_not_preserved.py", "Net", (8, 2), ((4, 8),), "hazard"),
    ("rng_objects_on_self.py", "Model", (8,), ((4, 8),), "hazard"),
    ("spectral_norm_power_iteration.py", "Discriminator", (8,), ((4, 8),), "hazard"),
    ("rule_ckp3xx_randomness.py", "Model", (8,), ((4, 8),), "hazard"),
    ("import_module_as_cp.py", "EncoderLayer", (8,), ((4, 8),), "hazard"),
    ("timm_norm_layer_variants.py", "Stage", (4, 2), ((2, 4, 8, 8),), "hazard"),
    ("checkpoint_sequential_rng_not_preserved.py", "Net", (8,), ((4, 8),), "hazard"),
    ("benign_checkpoint_sequential_one_segment.py", "Net", (4,), ((2, 4, 8, 8),), "benign"),
    ("benign_fresh_intermediate.py", "Block", (8,), ((4, 8),), "benign"),
    ("benign_residual_after_rebinding.py", "Encoder", (8, 2), ((4, 8),), "benign"),
    ("benign_dropout_default_rng_state.py", "Model", (8,), ((4, 8),), "benign"),
    ("benign_act_inplace_index.py", "Net", (4,), ((2, 4, 8, 8),), "benign"),
    ("benign_no_grad_buffer_free.py", "Model", (8,), ((4, 8),), "benign"),
    ("benign_local_containers.py", "Model", (8,), ((4, 8),), "benign"),
    ("benign_norms.py", "Net", (4,), ((2, 4, 8, 8),), "benign"),
    ("benign_local_rng_objects.py", "Model", (8,), ((4, 8),), "benign"),
    ("benign_timm_drop_path.py", "Net", (8, 2), ((4, 8),), "benign"),
    ("benign_frozen_batchnorm.py", "Backbone", (4,), ((2, 4, 8, 8),), "benign"),
    ("benign_conditional_inplace_helpers.py", "Net", (8,), ((4, 8),), "benign"),
    ("benign_data_dependent_control_flow.py", "Model", (8,), ((4, 8), (4,)), "benign"),
    ("benign_out_of_place_twins.py", "Net", (8,), ((4, 8), (4, 8), (4, 8)), "benign"),
    ("shape_stage_builder_named_stages.py", "Net", (), ((2, 3, 8, 8),), "hazard"),
    ("benign_stage_builder_groupnorm.py", "Net", (), ((2, 3, 8, 8),), "benign"),
    ("shape_builder_object_norm_factory.py", "TinyEfficientNet", (), ((2, 4, 8, 8),), "hazard"),
    ("shape_sequential_attribute_called.py", "GhostNet", (), ((2, 4, 8, 8),), "hazard"),
    ("shape_children_computed_names.py", "Net", (), ((2, 4, 8, 8),), "hazard"),
    ("timm_beit_kwargs_implicit_reentrant.py", "Beit", (8,), ((2, 3, 8),), "hazard"),
    ("benign_kwargs_nonreentrant.py", "Beit", (8,), ((2, 3, 8),), "benign"),
    ("rule_ckp403_frozen_inputs.py", "FrozenStemModel", (8,), ((4, 8),), "hazard"),
    ("benign_frozen_stem_nonreentrant.py", "FrozenStemModel", (8,), ((4, 8),), "benign"),
    ("moe_aux_loss_hook.py", "Model", (8,), ((4, 8),), "hazard"),
    ("benign_hook_reads_only.py", "Model", (8,), ((4, 8),), "benign"),
    ("fill_once_prefix_from_input.py", "Model", (8,), ((4, 8),), "hazard"),
    ("benign_fill_once_from_metadata.py", "Model", (8,), ((4, 8),), "benign"),
    ("shape_sequential_subclass_no_forward.py", "Net", (), ((2, 3, 8, 8),), "hazard"),
    ("benign_sequential_subclass_groupnorm.py", "Net", (), ((2, 3, 8, 8),), "benign"),
    ("shape_registry_build.py", "Net", (), ((2, 3, 8, 8),), "hazard"),
    ("shape_checkpoint_wrapper_constructor_arg.py", "Net", (), ((2, 3, 8, 8),), "hazard"),
    ("shape_get_layer_dispatch.py", "Model", (8,), ((4, 8),), "hazard"),
    ("shape_block_table_layer_fns.py", "Net", (), ((2, 3, 8, 8),), "hazard"),
    ("benign_block_table_layer_fns.py", "Net", (), ((2, 3, 8, 8),), "benign"),
    ("shape_model_configs_norm_pair.py", "net_bn", (), ((2, 3, 8, 8),), "hazard"),
    ("benign_model_configs_norm_pair.py", "net_gn", (), ((2, 3, 8, 8),), "benign"),
    ("shape_branch_arms_alias.py", "Model", (8,), ((4, 8),), "hazard"),
    ("benign_branch_arms_alias.py", "Model", (8,), ((4, 8), (4, 8)), "benign"),
]


@pytest.mark.parametrize(("name", "cls", "args", "shapes", "claim"), RUNTIME_CASES, ids=[c[0] for c in RUNTIME_CASES])
def test_runtime_verifier_agrees_with_fixture(
    name: str, cls: str, args: tuple[int, ...], shapes: tuple[tuple[int, ...], ...], claim: str
) -> None:
    """What the corpus claims statically, torch confirms at run time (needs the runtime extra)."""
    torch = pytest.importorskip("torch", reason="the runtime cross-check needs torch (pip install 'ckptlint[runtime]')")
    import importlib.util

    from runtime_checks import verify

    fixture = FIXTURES_DIR / name
    has_expectations = bool(parse_expectations(fixture))
    assert has_expectations == (claim == "hazard"), f"{name}: claim {claim!r} disagrees with its expectations"
    spec = importlib.util.spec_from_file_location(f"ckptlint_fixture_{fixture.stem}", fixture)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    inputs = tuple(torch.randn(*shape) for shape in shapes)
    model_cls = getattr(module, cls)
    # The question is whether checkpointing changes anything: a fixture that checkpoints nothing
    # (checkpoint_sequential with one segment) is compared as it is, not failed for it.
    report = verify(
        lambda: model_cls(*args), inputs[0] if len(inputs) == 1 else inputs, localize=False, allow_no_checkpoint=True
    )
    if claim == "hazard":
        assert not report.equivalent or report.notes, f"{name}: the verifier saw no difference\n{report}"
    else:
        assert report.equivalent and not report.notes, f"{name}: the verifier saw a difference\n{report}"


def test_harness_reports_missing_and_unexpected(tmp_path: Path) -> None:
    """The comparison itself: a missing, an extra and a wrongly pinned finding are all reported."""

    @dataclass(frozen=True)
    class FakeFinding:
        path: str
        line: int
        code: str
        callable: str | None
        message: str = "m"

    (tmp_path / "m.py").write_text("a\nb\nc\n", encoding="utf-8")
    expected = [
        Expectation("m.py", 1, "CKP101"),
        Expectation("m.py", 2, "CKP201", "Block.forward"),
        Expectation("m.py", 3, "CKP401"),
    ]
    found = [
        FakeFinding(str(tmp_path / "m.py"), 1, "CKP101", "f"),
        FakeFinding(str(tmp_path / "m.py"), 2, "CKP201", "Other.forward"),
        FakeFinding(str(tmp_path / "m.py"), 3, "CKP305", "f"),
    ]
    problems = compare(expected, found, tmp_path)
    text = "\n".join(problems)
    assert "MISSING    m.py:2: CKP201@Block.forward (found it naming callable 'Other.forward')" in text
    assert "MISSING    m.py:3: CKP401" in text
    assert "UNEXPECTED m.py:3: CKP305" in text
    assert "UNEXPECTED m.py:2: CKP201" in text
    assert len(problems) == 4
    assert compare(expected[:1], found[:1], tmp_path) == []
    # A pinned and an unpinned expectation at one place, both missing: reported, not a TypeError.
    both = [Expectation("m.py", 1, "CKP101", "A.f"), Expectation("m.py", 1, "CKP101")]
    assert len(compare(both, [], tmp_path)) == 2


def test_finding_shape_checks(tmp_path: Path) -> None:
    """The structural checks catch a missing site, a site outside the fixture, an unnamed callable."""
    from ckptlint.types import Finding, Site

    (tmp_path / "m.py").write_text("a\nb\n", encoding="utf-8")
    path = str(tmp_path / "m.py")
    good = Finding("CKP101", "in-place add_() on 'x' of checkpointed 'f'", path, 1, 0, 1, 3, "f", Site(path, 2))
    assert check_finding_shape([good], tmp_path) == []
    bad = [
        Finding("CKP101", "msg", path, 1, 0, 1, 3, "f", None),
        Finding("CKP201", "no name here", path, 1, 0, 1, 3, "g", Site(path, 9)),
        Finding("CKP301", "m", path, 2, 4, 1, 0, None, Site("/elsewhere/x.py", 1)),
    ]
    text = "\n".join(check_finding_shape(bad, tmp_path))
    for needle in (
        "NO SITE",
        "UNNAMED",
        "line 9 is outside",
        "BAD SPAN",
        "is not a file of the fixture",
        "NO CALLABLE",
    ):
        assert needle in text, needle


def test_expectation_parser(tmp_path: Path) -> None:
    """Several codes per line, pinned callables, and malformed items are rejected loudly."""
    fixture = tmp_path / "f.py"
    fixture.write_text("x  # expect: CKP101, CKP201@A.forward\ny\n", encoding="utf-8")
    assert parse_expectations(fixture) == [
        Expectation("f.py", 1, "CKP101"),
        Expectation("f.py", 1, "CKP201", "A.forward"),
    ]
    fixture.write_text("x  # expect: CKP1O1\n", encoding="utf-8")
    with pytest.raises(AssertionError, match="malformed expectation 'CKP1O1'"):
        parse_expectations(fixture)
