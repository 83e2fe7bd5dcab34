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
import re
import socket
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"

# Tag names, in one place. MLflow's UI opens an experiment on its GenAI traces page unless
# the experiment is tagged as classic model development (design.md s5).
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
PARENT_TAG = "mlflow.parentRunId"
TRAIN_KEY_TAG = "ytmt_train_key"      # hash of what determines a training's weights
RAY_RUN_TAG = "ray_run_name"          # the Ray Train run a training resumes
OWNER_TAG = "ytmt_owner"              # who started a training ($YTMT_USER, else the login)
STORAGE_TAG = "ytmt_ray_storage"      # where its Ray checkpoints are: part of its identity
VARIANT_TAG, SEED_TAG = "variant", "seed"
VGG_TAG = "vgg_weights"               # imagenet | random: what the hypercolumn/perceptual used
DVC_EXP_TAG, DVC_BASELINE_TAG = "dvc.exp_name", "dvc.baseline_rev"
CONTEXT_TAG = "mlflow.data.context"   # a logged dataset's role: train, validation, test


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
    """An ``MlflowClient`` bound to ``tracking_uri`` (imported lazily: mlflow is slow), its
    model registry there too unless ``$MLFLOW_REGISTRY_URI`` names another: never the
    registry an earlier ``mlflow.set_registry_uri`` of this process left behind."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri,
                        registry_uri=os.environ.get("MLFLOW_REGISTRY_URI") or tracking_uri)


def is_not_found(err: BaseException) -> bool:
    """Whether ``err`` is MLflow's answer that a run, experiment or model does not exist
    (``RESOURCE_DOES_NOT_EXIST``, from any store); a connection, permission or server error
    is not, and callers let it surface."""
    from mlflow.exceptions import MlflowException

    return isinstance(err, MlflowException) and err.error_code == "RESOURCE_DOES_NOT_EXIST"


def get_or_create_experiment(tracking_uri: str, name: str) -> str:
    """The id of experiment ``name``, created (with :func:`artifact_location`) if absent, and
    tagged as a model-development experiment (:data:`EXPERIMENT_KIND`)."""
    c = client(tracking_uri)
    exp = c.get_experiment_by_name(name)
    if exp is None:
        exp_id = c.create_experiment(name, artifact_location=artifact_location(tracking_uri),
                                     tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        return exp_id
    if exp.lifecycle_stage == "deleted":
        c.restore_experiment(exp.experiment_id)
    if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        c.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return exp.experiment_id


def provenance_tags() -> dict[str, str]:
    """What ``mlflow.start_run`` records about where a run came from (user, source file and
    type, git commit and repository), plus, under ``dvc exp run``, the DVC experiment's name
    and baseline revision. Runs made with ``MlflowClient.create_run`` get none of these by
    themselves (design.md s5)."""
    from mlflow.tracking.context.registry import resolve_tags

    tags = {k: str(v) for k, v in resolve_tags().items()}
    for env, tag in (("DVC_EXP_NAME", DVC_EXP_TAG), ("DVC_EXP_BASELINE_REV", DVC_BASELINE_TAG)):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    return tags


def filter_value(value: Any, what: str = "value") -> str:
    """``value`` as a quoted string of an MLflow search filter. MLflow's filter grammar has no
    escape inside quotes (``'it''s'`` and ``'it\\'s'`` match those very characters), so a value
    with ``'`` is put in double quotes and one with ``"`` in single quotes; a value holding
    both cannot be written exactly and is refused (ValueError naming ``what``), never
    passed on as a filter that means something else."""
    text = str(value)
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    raise ValueError(f"{what} = {text!r}: holds both ' and \", which an MLflow search filter "
                     "cannot quote")


def tags_filter(match: Mapping[str, Any]) -> str:
    """The search filter for runs whose tags equal ``match`` (every value quoted by
    :func:`filter_value`; keys in backticks, which a key must not contain)."""
    for key in match:
        if "`" in key:
            raise ValueError(f"tag {key!r}: a backtick cannot be part of an MLflow filter key")
    return " and ".join(f"tags.`{k}` = {filter_value(v, f'tag {k}')}" for k, v in match.items())


def open_run(tracking_uri: str, experiment: str, match: Mapping[str, str], *,
             run_name: str, tags: Mapping[str, str] | None = None, resume: bool = True,
             parent_run_id: str | None = None, provenance: Mapping[str, str] | None = None,
             reopen_finished: bool = False):
    """Find or create a run of ``experiment``: the newest run whose tags include ``match``
    is reopened (status RUNNING) when ``resume`` and it did not finish (or, with
    ``reopen_finished``, whatever its status: a restored Tune experiment is the run's own,
    even after it ended FINISHED); otherwise a new run
    named ``run_name`` with ``match``, ``tags``, ``provenance`` (default
    :func:`provenance_tags` of this process; a Ray worker passes its driver's) and the
    parent's id for a child run. Returns ``(experiment id, Run, reopened)``;
    ``Run.data.tags`` holds the tags the run had when found."""
    exp_id = get_or_create_experiment(tracking_uri, experiment)
    c = client(tracking_uri)
    where = tags_filter({**match, **({PARENT_TAG: parent_run_id} if parent_run_id else {})})
    runs = c.search_runs([exp_id], filter_string=where,
                         order_by=["attributes.start_time DESC"], max_results=1)
    provenance = dict(provenance) if provenance is not None else provenance_tags()
    if resume and runs and (reopen_finished or runs[0].info.status != "FINISHED"):
        c.update_run(runs[0].info.run_id, status="RUNNING")
        c.log_batch(runs[0].info.run_id, tags=_run_tags(provenance))
        return exp_id, runs[0], True
    all_tags = {**provenance, **match, **(tags or {})}
    if parent_run_id:
        all_tags[PARENT_TAG] = parent_run_id
    return exp_id, c.create_run(exp_id, run_name=run_name, tags=all_tags), False


def count_runs(tracking_uri: str, experiment_id: str, match: Mapping[str, str]) -> int:
    """How many runs of the experiment carry the tags ``match``."""
    return len(client(tracking_uri).search_runs([experiment_id],
                                                filter_string=tags_filter(match)))


def _run_tags(tags: Mapping[str, Any]) -> list:
    from mlflow.entities import RunTag

    return [RunTag(k, str(v)) for k, v in tags.items()]


def dataset_input(name: str, uri: str | Path, digest: str, context: str):
    """A ``DatasetInput`` for ``MlflowClient.log_inputs``: the data at ``uri`` (a folder or
    URL), identified by ``digest`` (a content hash), used as ``context`` (train, validation,
    test, ...). MLflow keeps the first 36 characters of the digest."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    source = str(uri) if "://" in str(uri) else Path(uri).resolve().as_uri()
    with warnings.catch_warnings():  # "can be interpreted in multiple ways": the same class
        warnings.simplefilter("ignore", UserWarning)
        resolved = resolve_dataset_source(source)
    dataset = MetaDataset(resolved, name=name, digest=digest[:36])
    return DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag(CONTEXT_TAG, context)])


#: what a store says when two runs of one experiment log the same new dataset at once
#: (SQLite, PostgreSQL, MySQL): MLflow looks the dataset up, then inserts it, so the slower
#: run hits the unique key of (experiment, name, digest) that the faster one just took
_DATASET_RACE = re.compile(r"unique constraint|integrityerror|duplicate (entry|key)", re.I)


def log_inputs_once(tracking_uri: str, run_id: str, inputs: list, attempts: int = 4) -> None:
    """Log the dataset inputs the run does not have yet (same name, digest and context).
    Two runs logging the same new dataset at once (a training matrix, concurrent sweep
    trials) race inside the store; the loser tries again, and then finds the dataset."""
    from mlflow.exceptions import MlflowException

    c = client(tracking_uri)
    for attempt in range(attempts):
        have = {(d.dataset.name, d.dataset.digest,
                 next((t.value for t in d.tags if t.key == CONTEXT_TAG), None))
                for d in c.get_run(run_id).inputs.dataset_inputs}
        todo = [i for i in inputs if (i.dataset.name, i.dataset.digest,
                                      next(t.value for t in i.tags if t.key == CONTEXT_TAG))
                not in have]
        if not todo:
            return
        try:
            c.log_inputs(run_id, datasets=todo)
            return
        except MlflowException as err:
            if attempt == attempts - 1 or not _DATASET_RACE.search(str(err)):
                raise
            time.sleep(0.2 * (attempt + 1))


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
        self.client.log_batch(self.run_id, tags=_run_tags(tags))

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

    def log_image(self, png: bytes, key: str, step: int) -> None:
        """An image (PNG bytes) at ``step`` under ``key``: the run's image grid and the UI's
        step slider show every step of ``key``."""
        import io

        from PIL import Image

        with Image.open(io.BytesIO(png)) as im:
            self.client.log_image(self.run_id, im.convert("RGB"), key=key, step=step)
