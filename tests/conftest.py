"""Shared fixtures: tiny models on CPU, seeded."""

import contextlib
import os
import sys

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


@contextlib.contextmanager
def mlflow_uris_restored():
    """Put MLflow's tracking and registry URIs back as they were: its environment variables
    and, if MLflow is imported, its module globals. ``mlflow.set_tracking_uri`` (the library
    calls it in-process) sets both, and ``mlflow.set_registry_uri`` in a test would otherwise
    bind every later in-process client of the suite to that test's registry."""
    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved_env = {k: os.environ.get(k) for k in keys}
    saved_globals = {name: getattr(module, attr) for name, module, attr in _mlflow_globals()}
    try:
        yield
    finally:
        for name, module, attr in _mlflow_globals():
            setattr(module, attr, saved_globals.get(name))
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _mlflow_globals():
    """(name, module, attribute) of MLflow's URI globals, for the modules imported so far."""
    places = (("tracking", "mlflow.tracking._tracking_service.utils", "_tracking_uri"),
              ("registry", "mlflow.tracking._model_registry.utils", "_registry_uri"))
    found = []
    for name, module_name, attr in places:
        module = sys.modules.get(module_name)
        if module is not None:
            if not hasattr(module, attr):  # MLflow moved it: fail here, not in a later test
                raise AttributeError(f"{module_name}.{attr} is gone: MLflow moved its URI "
                                     "globals, update tests/conftest.py")
            found.append((name, module, attr))
    return found


@pytest.fixture(autouse=True)
def _mlflow_uris_restored():
    with mlflow_uris_restored():
        yield
