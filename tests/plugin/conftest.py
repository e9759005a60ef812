"""Shared pieces for the pytest-plugin tests: tiny models written into each pytester directory."""

from __future__ import annotations

import pytest

#: Written as ``models.py`` next to the inner test files. Both models are tiny (a few
#: hundred parameters) so each verification takes milliseconds on CPU.
MODELS = '''
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


class Block(nn.Module):
    def __init__(self, width, dropout=0.0):
        super().__init__()
        self.fc1 = nn.Linear(width, 2 * width)
        self.fc2 = nn.Linear(2 * width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        return x + self.fc2(self.drop(torch.relu(self.fc1(x))))


class Net(nn.Module):
    """Clean by default; dropout_in_block + preserve_rng_state=False is the classic hazard."""

    def __init__(self, width=8, dropout_in_block=None, preserve_rng_state=True):
        super().__init__()
        torch.manual_seed(0)
        self.blocks = nn.ModuleList(
            Block(width, 0.5 if i == dropout_in_block else 0.0) for i in range(3)
        )
        self.head = nn.Linear(width, 2)
        self.preserve_rng_state = preserve_rng_state

    def forward(self, x):
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False, preserve_rng_state=self.preserve_rng_state)
        return self.head(x)


class Plain(nn.Module):
    """No checkpointing at all: the verifier wraps blocks itself when told checkpoint=..."""

    def __init__(self, width=8):
        super().__init__()
        torch.manual_seed(0)
        self.blocks = nn.ModuleList(Block(width) for _ in range(2))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


class GradModeBlock(nn.Module):
    """Branches on grad mode: reentrant checkpoint runs forward under no_grad, so outputs differ."""

    def __init__(self, width):
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, x):
        y = self.fc(x)
        return y * 1.5 if torch.is_grad_enabled() else y


class GradModeNet(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Linear(width, width)
        self.block = GradModeBlock(width)

    def forward(self, x):
        return checkpoint(self.block, self.stem(x), use_reentrant=True)


def grad_mode_hazard():
    """A purely numeric mismatch (outputs only): tolerances can hide it, unlike an RNG mismatch."""
    return GradModeNet()


def clean():
    return Net()


def hazardous():
    return Net(dropout_in_block=1, preserve_rng_state=False)
'''


@pytest.fixture
def models(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester directory holding ``models.py``."""
    pytester.makepyfile(models=MODELS)
    return pytester


@pytest.fixture(scope="session")
def warm_verifier() -> None:
    """Run the verifier once in this (outer) process before any in-process pytester session.

    pytester restores ``sys.modules`` after each in-process run, dropping the modules that
    run imported lazily; torch registers native operator libraries when some of its
    submodules (``torch._dynamo``, ``torch._inductor``) are imported, and a second import
    after such a restore fails. Importing them here, outside any inner session, keeps
    them loaded for good.
    """
    torch = pytest.importorskip("torch")
    import torch._dynamo  # noqa: F401  - imported lazily by checkpoint's non-reentrant path

    from hypothesis import given, settings

    from runtime_checks import strategies
    from runtime_checks.verify import verify

    namespace: dict[str, object] = {}
    exec(compile(MODELS, "models.py", "exec"), namespace)
    verify(namespace["clean"](), torch.randn(2, 8))
    verify(namespace["hazardous"](), torch.randn(2, 8))

    @settings(max_examples=2, database=None)
    @given(strategies.tensors(shape=("B", 8)))
    def draw(x: object) -> None:
        verify(namespace["clean"](), x)

    draw()
