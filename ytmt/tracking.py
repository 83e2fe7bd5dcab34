"""MLflow plumbing shared by training, sweeps and evaluation.

Tracking URI, in order: an explicit value (``train.tracking_uri`` or a CLI flag) >
``MLFLOW_TRACKING_URI`` > an *absolute* ``sqlite:///<cwd>/mlflow.db`` (git-ignored), with
artifacts in ``<cwd>/mlartifacts``. URIs are always made absolute so that Ray workers,
whose working directory differs from the driver's, write to the same store.

:func:`check_tracking_uri` fails within seconds, with a message naming the URI, when an
``http(s)`` server cannot be reached, so a typo never costs a worker start-up.

:class:`RunLogger` writes into an existing run by id through ``MlflowClient`` (never
``mlflow.start_run``), so a worker process can log without owning or ending the run, and it
logs each epoch's metrics at most once (see :meth:`RunLogger.log_epoch`).
"""

from __future__ import annotations

import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking server cannot be reached (or the URI is malformed)."""


def _absolute_sqlite(uri: str, base: Path) -> str:
    path = uri[len("sqlite:///"):]
    if path.startswith("/"):
        return uri
    return f"sqlite:///{(base / path).resolve()}"


def resolve_tracking_uri(explicit: str | None = None, cwd: str | Path | None = None) -> str:
    """The tracking URI to use (see module docstring); relative sqlite/file paths are made
    absolute against ``cwd`` (default: the current directory)."""
    base = Path(cwd or os.getcwd()).resolve()
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI") or ""
    if not uri:
        return f"sqlite:///{base / DEFAULT_DB}"
    if uri.startswith("sqlite:///"):
        return _absolute_sqlite(uri, base)
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        path = Path(parsed.path if parsed.scheme else uri)
        return (path if path.is_absolute() else base / path).resolve().as_uri()
    return uri


def artifact_location(tracking_uri: str) -> str | None:
    """Where new experiments put artifacts: ``mlartifacts/`` next to a SQLite file; for a
    server or a file store, ``None`` (the store's own default)."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        return (db.parent / DEFAULT_ARTIFACTS).resolve().as_uri()
    return None


def check_tracking_uri(uri: str, timeout: float = 3.0) -> None:
    """Raise :class:`TrackingUnavailable` within about ``timeout`` seconds when an http(s)
    tracking server does not answer; a SQLite URI must point into an existing folder."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        if not parsed.hostname:
            raise TrackingUnavailable(f"MLflow tracking URI {uri!r} has no host")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            with socket.create_connection((parsed.hostname, port), timeout=timeout):
                pass
        except OSError as err:
            raise TrackingUnavailable(
                f"MLflow tracking server {uri} is not reachable ({err}). Start it "
                f"(`mlflow server --host 127.0.0.1 --port {port}`), fix train.tracking_uri / "
                f"MLFLOW_TRACKING_URI, or unset both to use the local SQLite store.") from None
        health = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(health, timeout=timeout) as resp:  # noqa: S310
                resp.read(64)
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            raise TrackingUnavailable(
                f"MLflow tracking server {uri} accepted a connection but {health} did not "
                f"answer within {timeout:.0f} s ({err}); is it an MLflow server?") from None
    elif parsed.scheme == "sqlite":
        folder = Path(uri[len("sqlite:///"):]).parent
        if not folder.is_dir():
            raise TrackingUnavailable(
                f"MLflow tracking URI {uri}: folder {folder} does not exist")
    elif parsed.scheme not in ("file", "databricks", "postgresql", "mysql", "mssql", ""):
        raise TrackingUnavailable(f"MLflow tracking URI {uri!r}: unsupported scheme "
                                  f"{parsed.scheme!r}")


def client(tracking_uri: str):
    """An ``MlflowClient`` bound to ``tracking_uri`` (imported lazily: mlflow is slow)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def get_or_create_experiment(tracking_uri: str, name: str) -> str:
    """The id of experiment ``name``, created (with :func:`artifact_location`) if absent."""
    c = client(tracking_uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            c.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    return c.create_experiment(name, artifact_location=artifact_location(tracking_uri))


def _stringify(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_stringify(v) for v in value) + "]"
    return str(value)


class RunLogger:
    """Logs into the existing MLflow run ``run_id`` without starting or ending it."""

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        from mlflow.entities import Metric, Param, RunTag

        self._Metric, self._Param, self._RunTag = Metric, Param, RunTag
        self.client = client(tracking_uri)
        self.run_id = run_id
        self.client.get_run(run_id)  # fail early on a wrong id
        self._logged_steps: set[int] | None = None

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log the params the run does not have yet (a restarted worker re-logs nothing;
        a key logged earlier with another value is left as it was)."""
        existing = self.client.get_run(self.run_id).data.params
        todo = [self._Param(k, _stringify(v)[:6000]) for k, v in params.items()
                if k not in existing]
        for i in range(0, len(todo), 100):
            self.client.log_batch(self.run_id, params=todo[i:i + 100])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.client.log_batch(self.run_id, tags=[self._RunTag(k, str(v)) for k, v in tags.items()])

    def logged_steps(self, marker: str = "epoch") -> set[int]:
        """Steps at which ``marker`` was logged (the epochs already in the run)."""
        if self._logged_steps is None:
            history = self.client.get_metric_history(self.run_id, marker)
            self._logged_steps = {m.step for m in history}
        return self._logged_steps

    def log_epoch(self, epoch: int, metrics: Mapping[str, float], marker: str = "epoch") -> bool:
        """Log one epoch's metrics at ``step=epoch`` in one batch, unless that epoch is
        already in the run (a worker restarted after logging it). Returns whether it logged.

        Callers log an epoch only after its checkpoint is persisted, and on resume re-offer
        the epochs of the restored history: no epoch is lost and none is logged twice.
        """
        if epoch in self.logged_steps(marker):
            return False
        now = int(time.time() * 1000)
        values = {k: float(v) for k, v in metrics.items() if k != marker}
        batch = [self._Metric(k, v, now, epoch) for k, v in values.items()]
        batch.append(self._Metric(marker, float(epoch), now, epoch))  # marker last
        self.client.log_batch(self.run_id, metrics=batch)
        self._logged_steps.add(epoch)
        return True

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)
