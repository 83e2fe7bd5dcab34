"""ytmt.tracking.client: a client's model registry is its tracking store (or
``$MLFLOW_REGISTRY_URI``), never the registry an earlier ``mlflow.set_registry_uri`` of the
process left behind (the register stage sets it; a later client in the same process, in
the suite or a notebook, registered into the wrong store)."""

from __future__ import annotations

import mlflow
from mlflow import MlflowClient

from ytmt.tracking import client


def test_the_registry_follows_the_tracking_store_not_a_leftover_global(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    leftover, ours = (f"sqlite:///{tmp_path / n}.db" for n in ("leftover", "ours"))
    mlflow.set_registry_uri(leftover)
    # it also exported $MLFLOW_REGISTRY_URI, which the suite's autouse fixture takes back
    # after each test; the module's global stays
    monkeypatch.delenv("MLFLOW_REGISTRY_URI")
    try:
        assert MlflowClient(ours)._registry_uri == leftover  # MLflow's own default: the global
        client(ours).create_registered_model("ytmt")
        assert [m.name for m in MlflowClient(ours, registry_uri=ours)
                .search_registered_models()] == ["ytmt"]
        assert MlflowClient(leftover, registry_uri=leftover).search_registered_models() == []
        monkeypatch.setenv("MLFLOW_REGISTRY_URI", leftover)  # a registry named on purpose
        assert client(ours)._registry_uri == leftover
    finally:
        mlflow.set_registry_uri(None)
