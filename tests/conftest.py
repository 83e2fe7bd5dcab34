"""Shared fixtures: tiny models on CPU, seeded."""

import pytest
import torch

import ytmt


@pytest.fixture(scope="session")
def random_vgg():
    """A seeded random VGG-19 (no ImageNet file needed); shared, frozen."""
    return ytmt.load_vgg19("random", seed=0)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
