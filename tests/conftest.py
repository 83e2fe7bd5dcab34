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


@pytest.fixture(autouse=True)
def _mlflow_env_restored():
    """``mlflow.set_tracking_uri`` (the library calls it in-process) also exports
    MLFLOW_TRACKING_URI, which every later subprocess of the suite would inherit: put the
    MLflow variables back after each test."""
    import os

    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved = {k: os.environ.get(k) for k in keys}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
