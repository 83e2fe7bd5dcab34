"""SweepRecorder (:mod:`ytmt.sweep.recorder`) against a real MLflow store, fed the events
Tune sends it. The trials are plain stand-ins for Tune's Trial record: the recorder reads
only their id, last result and error file."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any

import pytest

from ytmt.sweep.recorder import SweepRecorder
from ytmt.sweep.records import TRIAL_TAG


@dataclass
class Trial:  # the attributes of ray.tune.experiment.Trial the recorder reads
    trial_id: str
    last_result: dict[str, Any] = field(default_factory=dict)
    error_file: str | None = None


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory):
    """One SQLite store for the module (creating one takes seconds)."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    c = MlflowClient(uri)
    return uri, c, c.create_experiment("sweep", artifact_location=str(root / "artifacts"))


@pytest.fixture
def store(mlflow_store):
    """A fresh sweep parent run with four trial runs, and a recorder of 3-epoch trials."""
    uri, c, exp = mlflow_store
    parent = c.create_run(exp).info.run_id
    runs = {t: c.create_run(exp, tags={"mlflow.parentRunId": parent, TRIAL_TAG: t}).info.run_id
            for t in ("t_00000", "t_00001", "t_00002", "t_00003")}
    logged: list[str] = []
    recorder = SweepRecorder(uri, exp, parent, epochs=3, log=logged.append)
    return c, recorder, runs, logged


def test_decisions_are_written_on_the_trials_runs(store):
    c, rec, runs, logged = store
    # t_00000 runs to the end; t_00001 is stopped by ASHA after epoch 1
    rec.on_trial_result(0, [], Trial("t_00000"), {"epoch": 1, "done": False})
    rec.on_trial_result(0, [], Trial("t_00001"), {"epoch": 1, "done": True})
    rec.on_trial_result(0, [], Trial("t_00000"), {"epoch": 3, "done": True})
    rec.on_trial_complete(0, [], Trial("t_00000", {"epoch": 3}))
    rec.on_trial_complete(0, [], Trial("t_00001", {"epoch": 1}))
    done, stopped = c.get_run(runs["t_00000"]), c.get_run(runs["t_00001"])
    assert done.data.tags["tune_decision"] == "completed" and done.info.status == "FINISHED"
    assert "tune_stopped_at_epoch" not in done.data.tags
    assert "tune_stopped_early" not in done.data.metrics
    assert stopped.data.tags["tune_decision"] == "stopped_early"
    assert stopped.data.tags["tune_stopped_at_epoch"] == "1"
    assert [(m.step, m.value) for m in c.get_metric_history(runs["t_00001"],
                                                            "tune_stopped_early")] == [(1, 1.0)]
    assert stopped.info.status == "FINISHED"
    assert logged == ["[tune] trial t_00001 stopped early by the scheduler at epoch 1/3"]


def test_interrupted_failed_and_unknown_trials(store):
    c, rec, runs, logged = store
    # an interrupted sweep: Tune completes a trial nothing stopped, mid-way
    rec.on_trial_complete(0, [], Trial("t_00002", {"epoch": 2}))
    abandoned = c.get_run(runs["t_00002"])
    assert abandoned.info.status == "KILLED" and "tune_decision" not in abandoned.data.tags
    rec.on_trial_error(0, [], Trial("t_00003", error_file="/runs/t3/error.txt"))
    failed = c.get_run(runs["t_00003"])
    assert failed.data.tags["tune_decision"] == "error" and failed.info.status == "FAILED"
    rec.on_trial_complete(0, [], Trial("t_09999", {"epoch": 3}))  # no MLflow run: logged
    assert logged == ["[tune] trial t_00003 failed: /runs/t3/error.txt",
                      "[tune] trial t_09999: no MLflow run to record {'tune_decision': "
                      "'completed'} on"]


def test_recorder_pickles_without_its_log_or_cache(store):
    c, rec, runs, _ = store
    rec.on_trial_result(0, [], Trial("t_00001"), {"epoch": 1, "done": True})
    copy = pickle.loads(pickle.dumps(rec))  # Tune saves callbacks with the experiment
    assert copy.log is print and copy._runs == {} and copy._stopped == {"t_00001"}
    copy.on_trial_complete(0, [], Trial("t_00001", {"epoch": 1}))  # finds the run again
    assert c.get_run(runs["t_00001"]).info.status == "FINISHED"
