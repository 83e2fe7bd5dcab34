"""Shared fixtures: tiny models on CPU, seeded."""

import contextlib
import os
import sys

import pytest
import torch

import ytmt


@pytest.fixture(scope="session")
def session_random_vgg():
    """The session's one seeded random VGG-19, for fixtures of a wider scope; tests take
    :func:`random_vgg`, which checks that they leave it as it was."""
    return ytmt.load_vgg19("random", seed=0)


@pytest.fixture(scope="session")
def _pristine_vgg_state(session_random_vgg):
    return {k: v.clone() for k, v in session_random_vgg.state_dict().items()}


@pytest.fixture
def random_vgg(session_random_vgg, _pristine_vgg_state):
    """A seeded random VGG-19 (no ImageNet file needed), frozen and shared by the whole
    session: a test that changes it (its weights, its mode, a ``requires_grad``) fails at
    its own teardown, not some later test that happens to use it."""
    vgg, pristine = session_random_vgg, _pristine_vgg_state
    yield vgg
    state = vgg.state_dict()
    changed = [k for k, v in pristine.items() if not torch.equal(state[k], v)]
    unfrozen = vgg.training or any(p.requires_grad for p in vgg.parameters())
    if changed or unfrozen:  # put it back, so that only the test that changed it fails
        vgg.load_state_dict(pristine)
        vgg.eval().requires_grad_(False)
    assert not changed, f"this test changed the shared random_vgg's {changed[:3]}"
    assert not unfrozen, "this test unfroze the shared random_vgg or put it in training mode"


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
