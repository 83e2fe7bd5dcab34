"""The suite's autouse guard puts MLflow's tracking and registry URIs back after each test:
the environment variables and the module globals ``mlflow.set_*_uri`` set."""

import os

import mlflow

from tests.conftest import mlflow_uris_restored


def test_set_uris_are_undone(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    before_tracking, before_registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    leaked = f"sqlite:///{tmp_path / 'leaked.db'}"
    with mlflow_uris_restored():
        mlflow.set_tracking_uri(leaked)
        mlflow.set_registry_uri(leaked)
        assert mlflow.get_tracking_uri() == leaked == mlflow.get_registry_uri()
        assert os.environ["MLFLOW_TRACKING_URI"] == leaked
    assert mlflow.get_tracking_uri() == before_tracking != leaked
    assert mlflow.get_registry_uri() == before_registry != leaked
    assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_REGISTRY_URI" not in os.environ


def test_control_without_the_guard_the_uris_leak(tmp_path, monkeypatch):
    """What the guard is for: without it, set_registry_uri outlives the environment's reset."""
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    leaked = f"sqlite:///{tmp_path / 'leaked.db'}"
    with mlflow_uris_restored():
        mlflow.set_registry_uri(leaked)
        os.environ.pop("MLFLOW_REGISTRY_URI")  # what restoring the variables alone did
        assert mlflow.get_registry_uri() == leaked  # the global alone still binds it
