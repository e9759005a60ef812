"""Every hazard of issue 4 item 6 is caught and attributed to its region, for both checkpoint variants."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from runtime_checks import verify  # noqa: E402
from tests.runtime.models import HAZARDS, Block, Net, PlainNet, RawInputNet, make_input  # noqa: E402

# What each hazard must produce beyond wrong values, per variant (True = reentrant).
EXPECTED_KINDS: dict[tuple[str, bool], set[str]] = {
    ("inplace_input", True): {"error"},
    ("batchnorm_train", True): {"buffer"},
    ("batchnorm_train", False): {"buffer"},
    ("dropout_no_preserve", True): {"rng"},
    ("dropout_no_preserve", False): {"rng"},
    ("python_random", True): {"rng"},
    ("python_random", False): {"rng"},
    ("numpy_random", True): {"rng"},
    ("numpy_random", False): {"rng"},
    ("generator", True): {"rng"},
    ("generator", False): {"rng"},
}


@pytest.mark.parametrize("use_reentrant", [False, True], ids=["nonreentrant", "reentrant"])
@pytest.mark.parametrize("hazard", HAZARDS)
def test_hazard_caught_and_localised(hazard: str, use_reentrant: bool) -> None:
    report = verify(Net(hazard, use_reentrant=use_reentrant), make_input())
    assert not report.equivalent, str(report)
    assert report.regions == ("blocks.0", "blocks.1", "blocks.2")
    # Localisation by bisection names the middle block for every mismatch,
    # including gradients of earlier parameters that the wrong values reach.
    assert {m.region for m in report.mismatches} == {"blocks.1"}, str(report)
    kinds = {m.kind for m in report.mismatches}
    assert EXPECTED_KINDS.get((hazard, use_reentrant), set()) <= kinds, str(report)
    if "error" not in kinds and hazard != "batchnorm_train":
        # (BatchNorm recomputes with the same batch statistics: only its buffers differ.)
        # Gradients of the hazardous block's own parameters are wrong.
        assert any(m.kind == "grad" and m.name.startswith("blocks.1.") for m in report.mismatches), str(report)


def test_rng_mismatch_names_the_stream() -> None:
    report = verify(Net("generator"), make_input())
    assert any(m.kind == "rng" and m.name == "generator:blocks.1.gen" for m in report.mismatches)
    report = verify(Net("numpy_random"), make_input())
    assert any(m.kind == "rng" and m.name == "numpy" for m in report.mismatches)


def test_batchnorm_eval_is_equivalent() -> None:
    model = Net("batchnorm_train").eval()
    for use_reentrant in (False, True):
        model.use_reentrant = use_reentrant
        report = verify(model, make_input(requires_grad=True))
        assert report.equivalent, str(report)
    assert not model.training and not model.blocks[1].norm.training


def test_batchnorm_train_reports_each_buffer() -> None:
    report = verify(Net("batchnorm_train"), make_input())
    buffers = {m.name for m in report.mismatches if m.kind == "buffer"}
    assert {"blocks.1.norm.running_mean", "blocks.1.norm.running_var", "blocks.1.norm.num_batches_tracked"} <= buffers


@pytest.mark.parametrize("use_reentrant", [False, True], ids=["nonreentrant", "reentrant"])
def test_no_input_requires_grad(use_reentrant: bool) -> None:
    report = verify(RawInputNet(use_reentrant=use_reentrant), make_input(requires_grad=False))
    if use_reentrant:
        missing = {m.name for m in report.mismatches if m.kind == "missing_grad"}
        assert missing == {"blocks.0.l1.weight", "blocks.0.l1.bias", "blocks.0.l2.weight", "blocks.0.l2.bias"}
        assert {m.region for m in report.mismatches} == {"blocks.0"}
        assert any("requires_grad" in n for n in report.notes)  # torch's own warning, surfaced
    else:
        assert report.equivalent, str(report)


@pytest.mark.parametrize("use_reentrant", [False, True], ids=["nonreentrant", "reentrant"])
def test_clean_models_equivalent(use_reentrant: bool) -> None:
    assert verify(Net(None, use_reentrant=use_reentrant), make_input(requires_grad=True)).equivalent
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, dropout=0.1, batch_first=True)
    model = torch.nn.Sequential(layer, torch.nn.Linear(16, 4))
    x = torch.randn(2, 5, 16, requires_grad=True)
    # Dropout inside the whole checkpointed layer: equal only because checkpoint restores the RNG state.
    report = verify(model, x, checkpoint=["0"], checkpoint_kwargs={"use_reentrant": use_reentrant})
    assert report.equivalent, str(report)
    assert report.regions == ("0",)
    assert report.memory.saved_bytes_saved > 0


def test_measuring_memory_does_not_perturb_checkpoint() -> None:
    # saved_tensors_hooks around a non-reentrant checkpoint of MultiheadAttention make
    # torch's own recompute check fail (torch 2.13 and 2.14): the compared runs carry none.
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, dropout=0.0, batch_first=True)
    report = verify(layer, torch.randn(2, 5, 16), checkpoint=["self_attn", "linear1"])
    assert report.equivalent, str(report)
    assert report.memory.saved_bytes_checkpointed >= 0


def test_checkpoint_argument_asks_is_it_safe() -> None:
    clean = verify(PlainNet(), make_input(), checkpoint=Block)
    assert clean.equivalent and clean.regions == ("blocks.0", "blocks.1", "blocks.2")
    unsafe = verify(PlainNet("counter_branch"), make_input(), checkpoint="Block")
    assert not unsafe.equivalent
    assert {m.region for m in unsafe.mismatches} == {"blocks.1"}
    by_predicate = verify(PlainNet("global_list"), make_input(), checkpoint=lambda m: isinstance(m, Block))
    assert not by_predicate.equivalent
    reentrant = verify(
        PlainNet(), make_input(), checkpoint=["blocks.0"], checkpoint_kwargs={"use_reentrant": True}
    )
    # Reentrant checkpoint on an input without grad: the block's parameters get none.
    assert {m.kind for m in reentrant.mismatches} == {"missing_grad"} or reentrant.equivalent


def test_localize_false_skips_bisection() -> None:
    report = verify(Net("counter_branch"), make_input(), localize=False)
    assert not report.equivalent
    assert {m.region for m in report.mismatches} == {None}


def test_report_table_largest_first() -> None:
    report = verify(Net("global_list"), make_input())
    text = str(report)
    assert "NOT EQUIVALENT" in text and "blocks.1" in text
    errs = [m.max_abs_err for m in report.mismatches if m.kind == "grad"]
    assert errs == sorted(errs, reverse=True)
    assert report.worst() is report.mismatches[0]


class _RReLUBlock(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(16, 16)
        self.act = torch.nn.RReLU()  # random slopes in train mode, drawn as the last op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.lin(x))


class _Wrapper(torch.nn.Module):
    def __init__(self, block: torch.nn.Module, use_reentrant: bool) -> None:
        super().__init__()
        self.inp = torch.nn.Linear(16, 16)
        self.block = block
        self.use_reentrant = use_reentrant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.utils.checkpoint.checkpoint(self.block, self.inp(x), use_reentrant=self.use_reentrant)


def test_rrelu_last_op_breaks_only_non_reentrant() -> None:
    # CHECKPOINT_SEMANTICS: non-reentrant early stop skips the RNG draw -> garbage grads; reentrant equal.
    assert verify(_Wrapper(_RReLUBlock(), use_reentrant=True), make_input()).equivalent
    report = verify(_Wrapper(_RReLUBlock(), use_reentrant=False), make_input())
    assert not report.equivalent and {m.region for m in report.mismatches} == {"block"}


@pytest.mark.parametrize("use_reentrant", [False, True], ids=["nonreentrant", "reentrant"])
def test_forward_hook_keeping_a_call_count(use_reentrant: bool) -> None:
    model = _Wrapper(Block(), use_reentrant)
    calls = [0]

    def hook(module: torch.nn.Module, args: object, out: torch.Tensor) -> torch.Tensor:
        calls[0] += 1  # the recompute runs the hook again
        return out * 2 if calls[0] % 2 == 0 else out

    model.block.l1.register_forward_hook(hook)
    report = verify(model, make_input())
    assert not report.equivalent
    assert any(m.kind == "grad" and m.name.startswith("block.") for m in report.mismatches)
    assert calls == [0]  # the hook's counter is rewound too


class _CacheAttn(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.k = torch.nn.Linear(16, 16)
        self.q = torch.nn.Linear(16, 16)

    def forward(self, x: torch.Tensor, cache: list[torch.Tensor]) -> torch.Tensor:
        cache.append(self.k(x))  # the recompute appends again: the keys grow
        keys = torch.cat(cache, dim=0)
        return self.q(x) @ keys.T @ keys


class _CacheNet(torch.nn.Module):
    def __init__(self, use_reentrant: bool) -> None:
        super().__init__()
        self.inp = torch.nn.Linear(16, 16)
        self.attn = _CacheAttn()
        self.use_reentrant = use_reentrant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.utils.checkpoint.checkpoint(self.attn, self.inp(x), [], use_reentrant=self.use_reentrant)


def test_kv_cache_in_passed_list() -> None:
    # CHECKPOINT_SEMANTICS: reentrant -> wrong grads; non-reentrant -> torch's CheckpointError (shape).
    reentrant = verify(_CacheNet(True), make_input())
    assert {m.kind for m in reentrant.mismatches} == {"grad"} and {m.region for m in reentrant.mismatches} == {"attn"}
    nonreentrant = verify(_CacheNet(False), make_input())
    assert [(m.kind, m.name, m.region) for m in nonreentrant.mismatches] == [("error", "CheckpointError", "attn")]


class _DictOut(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(16, 16)

    def forward(self, xs: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"y": self.lin(xs[0]) + xs[1]}


class _ListInNet(torch.nn.Module):
    def __init__(self, use_reentrant: bool) -> None:
        super().__init__()
        self.inp = torch.nn.Linear(16, 16)
        self.block = _DictOut()
        self.use_reentrant = use_reentrant

    def forward(self, pair: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        a, b = pair
        return torch.utils.checkpoint.checkpoint(self.block, [self.inp(a), b], use_reentrant=self.use_reentrant)


def test_list_input_dict_output() -> None:
    # CHECKPOINT_SEMANTICS: reentrant sees no tensor argument (it is inside a list) -> missing grads; non-reentrant equal.
    pair = [make_input(), make_input(requires_grad=True)]
    report = verify(_ListInNet(True), ([pair[0], pair[1]],))  # nested input: one positional list
    missing = {m.name for m in report.mismatches if m.kind == "missing_grad"}
    assert missing == {"block.lin.weight", "block.lin.bias", "inp.weight", "inp.bias", "input[0][1]"}
    assert {m.region for m in report.mismatches} == {"block"}
    assert verify(_ListInNet(False), ([pair[0], pair[1]],)).equivalent
    assert pair[1].grad is None  # the caller's input tensors are never touched
