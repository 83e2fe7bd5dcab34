"""Tracking URI resolution, the fast reachability check and once-only epoch logging."""

import socket
import time

import pytest

from ytmt.tracking import (
    RunLogger,
    TrackingUnavailable,
    artifact_location,
    check_tracking_uri,
    get_or_create_experiment,
    resolve_tracking_uri,
)


def test_uri_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking_uri(None, tmp_path) == "http://127.0.0.1:5000"
    assert resolve_tracking_uri("sqlite:///x/m.db", tmp_path) == f"sqlite:///{tmp_path}/x/m.db"
    assert resolve_tracking_uri("runs", tmp_path) == (tmp_path / "runs").as_uri()
    assert artifact_location(f"sqlite:///{tmp_path}/mlflow.db") == \
        (tmp_path / "mlartifacts").as_uri()
    assert artifact_location("http://127.0.0.1:5000") is None


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_fails_fast():
    uri = f"http://127.0.0.1:{_closed_port()}"
    t0 = time.perf_counter()
    with pytest.raises(TrackingUnavailable, match="not reachable"):
        check_tracking_uri(uri)
    assert time.perf_counter() - t0 < 5


def test_sqlite_in_missing_folder_fails(tmp_path):
    with pytest.raises(TrackingUnavailable, match="does not exist"):
        check_tracking_uri(f"sqlite:///{tmp_path}/nope/mlflow.db")
    check_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")


def test_each_epoch_is_logged_once(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp = get_or_create_experiment(uri, "t")
    assert get_or_create_experiment(uri, "t") == exp
    run = MlflowClient(uri).create_run(exp)
    logger = RunLogger(uri, run.info.run_id)
    assert logger.log_epoch(1, {"epoch": 1, "loss": 0.5})
    assert not logger.log_epoch(1, {"epoch": 1, "loss": 0.4})
    # a restarted worker (a new logger) sees epoch 1 in the run and skips it too
    again = RunLogger(uri, run.info.run_id)
    assert not again.log_epoch(1, {"epoch": 1, "loss": 0.3})
    assert again.log_epoch(2, {"epoch": 2, "loss": 0.2})
    history = MlflowClient(uri).get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.2)]
    again.log_params({"a": 1, "b": [1, 2]})
    again.log_params({"a": 2, "c": "x"})  # existing keys are kept, new ones added
    params = MlflowClient(uri).get_run(run.info.run_id).data.params
    assert params == {"a": "1", "b": "[1, 2]", "c": "x"}
