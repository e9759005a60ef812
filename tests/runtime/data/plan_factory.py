"""Factories for the ``ckptlint profile``/``ckptlint plan`` CLI tests: (model, inputs) pairs."""

import torch

from tests.runtime.planner_models import Stack, inputs


def build():
    torch.manual_seed(0)
    return Stack(6), inputs()


def model_only():
    return Stack(3)


def batchnorm():
    torch.manual_seed(0)
    return Stack(4, batchnorm_at=1, sequential=False), inputs()
