"""Qualified names and method names the analysis knows about.

Everything here is a fact about PyTorch (or timm/transformers/diffusers),
kept in one place so rules and discovery agree on it.
"""

from __future__ import annotations

__all__ = [
    "APPLY_ACTIVATION_CHECKPOINTING",
    "BATCHNORM_CLASSES",
    "CHECKPOINT_BY_PATH",
    "CHECKPOINT_FUNCTIONS",
    "CHECKPOINT_OWN_KWARGS",
    "CHECKPOINT_POLICIES",
    "CHECKPOINT_SEQ",
    "CHECKPOINT_SEQUENTIAL",
    "CHECKPOINT_WITHOUT_OUTPUT",
    "CHECKPOINT_WRAPPER",
    "CONTAINER_CLASSES",
    "CONTAINER_MUTATORS",
    "DROPOUT_CLASSES",
    "GC_FUNC_ATTR",
    "GC_LAYER_BASES",
    "INPLACE_EXCLUDED",
    "INPLACE_NO_TWIN",
    "INPLACE_POSITION",
    "INSTANCENORM_CLASSES",
    "MEGATRON_CHECKPOINT",
    "MODULE_WRAP_POLICY",
    "NON_TENSOR_ATTRS",
    "OWNED_ITER_METHODS",
    "POLICY_KEYWORDS",
    "PARTIAL",
    "RANDOM_FUNCTIONS",
    "RANDOM_METHODS",
    "SEQUENTIAL_CLASSES",
    "VIEW_ATTRS",
    "VIEW_FUNCTIONS",
    "VIEW_METHODS",
    "matches",
]

TORCH_CHECKPOINT = "torch.utils.checkpoint.checkpoint"
# Functions that behave like torch's checkpoint(fn, *args, **kwargs). timm
# re-exports a thin wrapper that defaults use_reentrant for the caller.
CHECKPOINT_FUNCTIONS = frozenset(
    {
        TORCH_CHECKPOINT,
        "timm.models._manipulate.checkpoint",
        "timm.models.checkpoint",
        "timm.layers.checkpoint",
        # DeepSpeed's activation checkpointing (replays the CUDA RNG through its own tracker) and
        # TransformerEngine's (replays CPU/CUDA and its tracker's states): fn first, inputs after.
        "deepspeed.checkpointing.checkpoint",
        "deepspeed.runtime.activation_checkpointing.checkpointing.checkpoint",
        "transformer_engine.pytorch.checkpoint",
        "transformer_engine.pytorch.distributed.checkpoint",
    }
)
# megatron-core's checkpoint(function, distribute_saved_activations, *args): a flag comes before the
# inputs. Its CheckpointFunction stashes and restores the CPU, CUDA and RNG-tracker states and runs
# the region's backward as a nested one (reentrant: no keyword inputs, inputs must carry grad).
MEGATRON_CHECKPOINT = frozenset(
    {
        "megatron.core.tensor_parallel.checkpoint",
        "megatron.core.tensor_parallel.random.checkpoint",
        "megatron.mpu.checkpoint",
        "megatron.mpu.random.checkpoint",
    }
)
# ``ckpt = tensor_parallel.CheckpointWithoutOutput(); out = ckpt.checkpoint(fn, *args)``: the same
# recompute, the output freed after use and rebuilt in backward.
CHECKPOINT_WITHOUT_OUTPUT = frozenset(
    {"megatron.core.tensor_parallel.CheckpointWithoutOutput", "megatron.core.tensor_parallel.random.CheckpointWithoutOutput"}
)
TORCH_CHECKPOINT_NAMES = frozenset({TORCH_CHECKPOINT, "torch.utils.checkpoint.checkpoint_sequential"})
CHECKPOINT_SEQUENTIAL = frozenset({"torch.utils.checkpoint.checkpoint_sequential"})
CHECKPOINT_SEQ = frozenset({"timm.models._manipulate.checkpoint_seq", "timm.models.checkpoint_seq", "timm.models.helpers.checkpoint_seq"})
_CW = "torch.distributed.algorithms._checkpoint.checkpoint_wrapper"
CHECKPOINT_WRAPPER = frozenset({f"{_CW}.checkpoint_wrapper", "torch.distributed.algorithms._checkpoint.checkpoint_wrapper"})
APPLY_ACTIVATION_CHECKPOINTING = frozenset({f"{_CW}.apply_activation_checkpointing"})
# Calls that switch checkpointing on for every module of the classes a policy names:
# torchtune's set_activation_checkpointing(model, auto_wrap_policy={Layer}), Lightning's
# FSDPStrategy(activation_checkpointing_policy={Block}) / (activation_checkpointing=Block).
CHECKPOINT_POLICIES = frozenset(
    {
        "torchtune.training.set_activation_checkpointing",
        "torchtune.training._activation_checkpointing.set_activation_checkpointing",
        "torchtune.utils.set_activation_checkpointing",
        "lightning.pytorch.strategies.FSDPStrategy",
        "lightning.fabric.strategies.FSDPStrategy",
        "lightning.pytorch.strategies.fsdp.FSDPStrategy",
        "lightning.fabric.strategies.fsdp.FSDPStrategy",
        "pytorch_lightning.strategies.FSDPStrategy",
    }
)
# mmengine: turn_on_activation_checkpointing(model, ["backbone.layer1"]) — submodules named by path.
CHECKPOINT_BY_PATH = frozenset(
    {
        "mmengine.runner.turn_on_activation_checkpointing",
        "mmengine.runner.activation_checkpointing.turn_on_activation_checkpointing",
    }
)
POLICY_KEYWORDS = ("auto_wrap_policy", "activation_checkpointing_policy", "activation_checkpointing")
MODULE_WRAP_POLICY = frozenset(
    {"torch.distributed.fsdp.wrap.ModuleWrapPolicy", "torch.distributed.fsdp.ModuleWrapPolicy"}
)
# Keyword arguments checkpoint() consumes itself; any other keyword is passed
# through to the checkpointed function (and raises under use_reentrant=True).
CHECKPOINT_OWN_KWARGS = frozenset(
    {"use_reentrant", "preserve_rng_state", "context_fn", "determinism_check", "debug", "early_stop", "function"}
)
GC_LAYER_BASES = frozenset(
    {
        "transformers.modeling_layers.GradientCheckpointingLayer",
        "transformers.GradientCheckpointingLayer",
    }
)
GC_FUNC_ATTR = "_gradient_checkpointing_func"
PARTIAL = frozenset({"functools.partial"})

_NN = "torch.nn"
BATCHNORM_CLASSES = frozenset(
    {
        f"{_NN}.{n}"
        for n in (
            "BatchNorm1d",
            "BatchNorm2d",
            "BatchNorm3d",
            "SyncBatchNorm",
            "LazyBatchNorm1d",
            "LazyBatchNorm2d",
            "LazyBatchNorm3d",
            "modules.batchnorm.BatchNorm1d",
            "modules.batchnorm.BatchNorm2d",
            "modules.batchnorm.BatchNorm3d",
            "modules.batchnorm._BatchNorm",
            "modules.batchnorm._NormBase",
            "modules.batchnorm.SyncBatchNorm",
        )
    }
)
# InstanceNorm defaults to track_running_stats=False: flagged only when on.
INSTANCENORM_CLASSES = frozenset(
    {
        f"{_NN}.{n}"
        for n in (
            "InstanceNorm1d",
            "InstanceNorm2d",
            "InstanceNorm3d",
            "LazyInstanceNorm1d",
            "LazyInstanceNorm2d",
            "LazyInstanceNorm3d",
            "modules.instancenorm._InstanceNorm",
        )
    }
)
PLAIN_MODULES = frozenset({f"{_NN}.Module", f"{_NN}.modules.module.Module"})
SEQUENTIAL_CLASSES = frozenset({f"{_NN}.Sequential", f"{_NN}.modules.container.Sequential"})
CONTAINER_CLASSES = SEQUENTIAL_CLASSES | frozenset(
    {f"{_NN}.ModuleList", f"{_NN}.ModuleDict", f"{_NN}.modules.container.ModuleList", f"{_NN}.modules.container.ModuleDict"}
)
DROPOUT_CLASSES = frozenset(
    {
        f"{_NN}.{n}"
        for n in ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout", "RReLU")
    }
)
# Position of ``inplace`` among the constructor's positional parameters.
INPLACE_POSITION = {
    "ReLU": 0,
    "ReLU6": 0,
    "SiLU": 0,
    "Hardswish": 0,
    "Hardsigmoid": 0,
    "Mish": 0,
    "SELU": 0,
    "LeakyReLU": 1,
    "ELU": 1,
    "CELU": 1,
    "Dropout": 1,
    "Dropout1d": 1,
    "Dropout2d": 1,
    "Dropout3d": 1,
    "AlphaDropout": 1,
    "FeatureAlphaDropout": 1,
    "Threshold": 2,
    "Hardtanh": 2,
    "RReLU": 2,
}

# Results that may share storage with the receiver: mutating them mutates it.
# ``to``/``contiguous``/``float`` return ``self`` when nothing changes.
VIEW_METHODS = frozenset(
    {
        "view",
        "view_as",
        "reshape",
        "reshape_as",
        "transpose",
        "permute",
        "t",
        "narrow",
        "unsqueeze",
        "squeeze",
        "expand",
        "expand_as",
        "as_strided",
        "flatten",
        "unflatten",
        "select",
        "chunk",
        "split",
        "tensor_split",
        "unbind",
        "diagonal",
        "movedim",
        "moveaxis",
        "swapaxes",
        "swapdims",
        "unfold",
        "detach",
        "contiguous",
        "to",
        "type_as",
        "float",
        "half",
        "bfloat16",
        "double",
        "values",
        "indices",
        "view_as_real",
        "view_as_complex",
        "get",
        "__getitem__",
    }
)
VIEW_ATTRS = frozenset({"data", "T", "mT", "H", "mH", "real", "imag"})
VIEW_FUNCTIONS = frozenset(
    f"torch.{n}"
    for n in (
        "transpose",
        "reshape",
        "flatten",
        "squeeze",
        "unsqueeze",
        "narrow",
        "select",
        "chunk",
        "split",
        "tensor_split",
        "unbind",
        "permute",
        "movedim",
        "moveaxis",
        "swapaxes",
        "diagonal",
        "as_strided",
        "view_as_real",
        "view_as_complex",
        "detach",
        "t",
    )
)
# Methods returning objects owned by their receiver (a module's parameters).
OWNED_ITER_METHODS = frozenset(
    {"parameters", "buffers", "modules", "children", "named_parameters", "named_buffers", "named_modules",
     "named_children", "items", "keys", "values"}
)
# Attributes of a tensor that are plain metadata (never mutated in place).
NON_TENSOR_ATTRS = frozenset(
    {"shape", "dtype", "device", "ndim", "requires_grad", "grad_fn", "is_cuda", "layout", "is_leaf", "names"}
)
# ``add``/``sort`` are left out: tensors have out-of-place methods of those names.
CONTAINER_MUTATORS = frozenset(
    {
        "append",
        "extend",
        "insert",
        "pop",
        "popitem",
        "setdefault",
        "clear",
        "remove",
        "update",
        "appendleft",
        "extendleft",
        "popleft",
        "discard",
    }
)
# Trailing-underscore methods that do not change tensor data.
INPLACE_EXCLUDED = frozenset({"requires_grad_", "share_memory_", "retain_grad_", "record_stream_", "pin_memory_"})
# In-place methods without a same-named out-of-place twin (no autofix).
INPLACE_NO_TWIN = frozenset(
    {
        "copy_",
        "zero_",
        "fill_",
        "resize_",
        "resize_as_",
        "set_",
        "uniform_",
        "normal_",
        "exponential_",
        "geometric_",
        "cauchy_",
        "log_normal_",
        "random_",
        "fill_diagonal_",
        "detach_",
        "put_",
        "index_put_",
        "copysign_",
        "bernoulli_",
    }
)

# Torch functions/methods that draw from a random generator.
RANDOM_FUNCTIONS = frozenset(
    [f"torch.{n}" for n in (
        "rand", "randn", "randint", "randperm", "rand_like", "randn_like", "randint_like",
        "bernoulli", "multinomial", "normal", "poisson", "dropout", "alpha_dropout",
        "feature_alpha_dropout", "rrelu", "rrelu_", "dropout_", "native_dropout",
    )]
    + [f"torch.nn.functional.{n}" for n in (
        "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout",
        "feature_alpha_dropout", "rrelu", "rrelu_", "gumbel_softmax",
    )]
)
RANDOM_METHODS = frozenset(
    {"bernoulli_", "bernoulli", "normal_", "uniform_", "random_", "exponential_", "geometric_", "cauchy_",
     "log_normal_", "multinomial"}
)


def matches(qualnames: list[str] | tuple[str, ...] | set[str], names: frozenset[str] | set[str]) -> bool:
    """True when any candidate qualified name is in ``names``."""
    return any(q in names for q in qualnames)

# What a tensor's attribute or method gives that does not depend on its values: a fill-once cache built
# from these alone (``if self.cos is None: self.cos = make(x.shape[-1], x.device)``) fills the same way
# in the recompute.
TENSOR_METADATA_ATTRS = frozenset({"shape", "dtype", "device", "is_cuda", "layout", "ndim", "requires_grad"})
TENSOR_METADATA_METHODS = frozenset({
    "size", "dim", "numel", "nelement", "element_size", "get_device", "stride", "is_floating_point",
    "is_complex", "new_zeros", "new_ones", "new_empty", "new_full",
})
