"""Issue 26 §3: the evaluation's MLflow calls treat only "does not exist" as a missing run or
model (ytmt.tracking.is_not_found); any other answer (no permission, a server or connection
error) surfaces at once instead of sending the results elsewhere or hiding the cause."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
from mlflow.exceptions import MlflowException

from ytmt.evaluation.config import RegisterConfig
from ytmt.evaluation.mlflow_log import CHECKPOINT_TAG, run_for
from ytmt.evaluation.registry import register_models
from ytmt.tracking import client


class _Refusing(BaseHTTPRequestHandler):
    """A tracking server that is up (``/health``) but refuses every API call with MLflow's
    PERMISSION_DENIED error, recording the calls it got."""

    calls: list[str] = []

    def _answer(self) -> None:
        self.calls.append(self.path.split("?")[0])
        if self.path.startswith("/health"):
            status, body = 200, b"OK"
        else:
            status = 403
            body = json.dumps({"error_code": "PERMISSION_DENIED",
                               "message": "token lacks access"}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def refusing_server():
    _Refusing.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Refusing.calls
    server.shutdown()
    server.server_close()


def _entry(run_id: str) -> SimpleNamespace:
    """What run_for reads of an evaluate.ModelEntry."""
    return SimpleNamespace(key="ytmt-ucs-seed0", run_id=run_id, path="models/ytmt-ucs/seed0",
                           variant="ytmt-ucs", seed=0)


def test_a_refused_run_lookup_surfaces_instead_of_opening_another_run(refusing_server):
    uri, calls = refusing_server
    with pytest.raises(MlflowException, match="token lacks access") as err:
        run_for(_entry("a" * 32), uri, "ytmt-evaluate")
    assert err.value.error_code == "PERMISSION_DENIED"
    assert calls == ["/api/2.0/mlflow/runs/get"]  # no new evaluation run was tried


def test_a_run_unknown_to_the_store_gets_an_evaluation_run(tmp_path, caplog):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with caplog.at_level(logging.WARNING, logger="ytmt.evaluation.mlflow_log"):
        run_id = run_for(_entry("b" * 32), uri, "ytmt-evaluate")
    assert run_id != "b" * 32 and "not found" in caplog.text
    assert client(uri).get_run(run_id).data.tags[CHECKPOINT_TAG] == "models/ytmt-ucs/seed0"


def test_a_refused_registry_lookup_surfaces_instead_of_creating_the_model(refusing_server):
    uri, calls = refusing_server
    summary = {"models": [{"variant": "ytmt-ucs", "seed": 0, "model_uri": "models:/m-1"}]}
    with pytest.raises(MlflowException, match="token lacks access") as err:
        register_models(summary, RegisterConfig(), tracking_uri=uri)
    assert err.value.error_code == "PERMISSION_DENIED"
    assert not [c for c in calls if c.endswith("registered-models/create")]
