"""A real 2-trial sweep at tiny scale (width 4, 32 px crops, 2 steps per epoch, 2 epochs),
interrupted with Ctrl-C (SIGINT) once its first trial has finished and run again.

One sweep serves every test here (Ray start-up and worker start-up dominate its cost).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from .conftest import run_tune, sweep_params, tune_cmd

pytestmark = pytest.mark.slow

EPOCHS = 2


def _client(tmp: Path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")


def _finished_child(tmp: Path, log: Path):
    if "[tune] starting sweep" not in log.read_text():
        return None  # the sweep has not set up its MLflow store yet: do not race it
    c = _client(tmp)
    exp = c.get_experiment_by_name("ytmt-tune")
    if exp is None:
        return None
    runs = c.search_runs([exp.experiment_id], filter_string=(
        "tags.ytmt_tune_trial_id != '' and attributes.status = 'FINISHED'"))
    return runs[0] if runs else None


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, shards):
    tmp = tmp_path_factory.mktemp("sweep")
    params = sweep_params(
        tmp, epochs=EPOCHS, num_samples=1, overrides={"train.max_steps_per_epoch": 2},
        space={"loss.perceptual": {"type": "loguniform", "low": 0.01, "high": 1.0},
               "loss.exclusion": {"type": "grid", "values": [0.0, 2.0]}})
    out = tmp / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    log1 = tmp / "first.log"
    with log1.open("w") as log:
        proc = subprocess.Popen(tune_cmd(params, shards, out), cwd=tmp, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 420
            first = None
            while first is None and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(2)
                first = _finished_child(tmp, log1)
            assert first is not None, "no trial finished:\n" + log1.read_text()[-4000:]
            proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
            rc1 = proc.wait(timeout=180)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    second = run_tune(params, shards, out)
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    with (out / "trials.csv").open() as f:
        rows = list(csv.DictReader(f))
    return {"tmp": tmp, "out": out, "rc1": rc1, "log1": log1.read_text(), "first": first,
            "second": second.stdout + second.stderr, "rows": rows,
            "summary": json.loads((out / "summary.json").read_text()),
            "best": yaml.safe_load((out / "best.yaml").read_text())}


def test_interrupted_sweep_resumes_without_rerunning_finished_trials(sweep):
    assert sweep["rc1"] == 130, sweep["log1"][-3000:]
    assert "sweep interrupted" in sweep["log1"]
    assert "resuming sweep" in sweep["second"]
    assert sweep["summary"]["restored"] is True
    first = sweep["first"]
    trial_id = first.data.tags["ytmt_tune_trial_id"]
    after = _client(sweep["tmp"]).get_run(first.info.run_id)
    # a re-run trial reopens its MLflow run and ends it again
    assert after.info.end_time == first.info.end_time
    assert after.info.status == "FINISHED"
    row = next(r for r in sweep["rows"] if r["trial_id"] == trial_id)
    trial_dir = next(Path(sweep["summary"]["experiment_path"]).glob(f"*{trial_id}*"))
    results = (trial_dir / "result.json").read_text().splitlines()
    assert len(results) == int(row["epochs_run"])  # no second pass appended


def test_both_trials_are_mlflow_children_of_the_sweep_run(sweep):
    c = _client(sweep["tmp"])
    exp = c.get_experiment_by_name("ytmt-tune")
    parents = c.search_runs([exp.experiment_id], filter_string="tags.ytmt_role = 'sweep'")
    assert len(parents) == 1  # the resumed sweep reused its parent run
    parent = parents[0]
    assert parent.info.run_id == sweep["summary"]["parent_run_id"]
    assert parent.info.status == "FINISHED"
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    source = parent.data.tags["mlflow.source.name"]  # provenance, as mlflow.start_run sets it
    assert parent.data.tags["mlflow.user"] and source
    children = c.search_runs([exp.experiment_id], filter_string=(
        f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"))
    assert len(children) == len(sweep["rows"]) == 2
    by_trial = {r.data.tags["ytmt_tune_trial_id"]: r for r in children}
    assert set(by_trial) == {r["trial_id"] for r in sweep["rows"]}
    for row in sweep["rows"]:
        run = by_trial[row["trial_id"]]
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.source.name"] == source  # the driver's, not Ray's worker
        assert row["mlflow_run_id"] == run.info.run_id
        for key in ("loss.perceptual", "loss.exclusion"):  # the sampled weights as params
            assert float(run.data.params[key]) == pytest.approx(float(row[key]))
        assert run.data.params["train.max_steps_per_epoch"] == "2"  # tune.overrides applied
        steps = sorted(m.step for m in c.get_metric_history(run.info.run_id, "val_psnr_t"))
        epochs = int(row["epochs_run"])
        # a trial ASHA stops may finish (and log) one more epoch while Tune ends it
        assert steps == list(range(1, len(steps) + 1)) and epochs <= len(steps) <= EPOCHS
        if row["status"] == "completed":
            assert len(steps) == epochs == EPOCHS
        assert run.data.tags["ray_node_id.rank0"] == row["train_nodes"]
    assert sorted(float(r["loss.exclusion"]) for r in sweep["rows"]) == [0.0, 2.0]  # the grid


def test_scheduler_decisions_are_recorded(sweep):
    c = _client(sweep["tmp"])
    epoch1 = {}
    for row in sweep["rows"]:
        run = c.get_run(row["mlflow_run_id"])
        decision = run.data.tags["tune_decision"]
        assert decision == row["scheduler_decision"] == row["status"]
        epochs = int(row["epochs_run"])
        if decision == "completed":
            assert epochs == EPOCHS and row["stopped_at_epoch"] == ""
        else:
            assert decision == "stopped_early" and row["stopped_early"] == "True"
            assert int(run.data.tags["tune_stopped_at_epoch"]) == epochs < EPOCHS
            assert [m.step for m in c.get_metric_history(run.info.run_id,
                                                         "tune_stopped_early")] == [epochs]
        epoch1[row["trial_id"]] = next(m.value for m in c.get_metric_history(
            run.info.run_id, "val_psnr_t") if m.step == 1)
    # ASHA (grace 1, reduction 2) stops the second trial at epoch 1 iff it is below the
    # first; the first trial to reach the rung is never stopped there.
    a, b = sorted(sweep["rows"], key=lambda r: r["trial_id"])
    assert a["status"] == "completed"
    assert (b["status"] == "stopped_early") == (epoch1[b["trial_id"]] < epoch1[a["trial_id"]])
    parent = c.get_run(sweep["summary"]["parent_run_id"])
    assert parent.data.metrics["trials_stopped_early"] == sum(
        r["status"] == "stopped_early" for r in sweep["rows"])
    assert sweep["summary"]["stopped_early"] == [
        r["trial_id"] for r in sweep["rows"] if r["status"] == "stopped_early"]


def test_best_yaml_holds_the_best_trials_weights(sweep):
    rows = [r for r in sweep["rows"] if r["status"] == "completed"]  # ASHA's survivors
    best = max(rows, key=lambda r: float(r["val_psnr_t"]))
    assert sweep["summary"]["best_trial_id"] == best["trial_id"]
    assert sweep["best"] == {"variants": ["ytmt-ucs"], "weights": {
        "loss.perceptual": pytest.approx(float(best["loss.perceptual"])),
        "loss.exclusion": pytest.approx(float(best["loss.exclusion"]))}}
    weights = sweep["best"]["weights"]
    c = _client(sweep["tmp"])
    last = max(c.get_metric_history(best["mlflow_run_id"], "val_psnr_t"), key=lambda m: m.step)
    assert sweep["summary"]["best_metric"] == pytest.approx(last.value)
    parent = c.get_run(sweep["summary"]["parent_run_id"])
    assert float(parent.data.tags["best.loss.perceptual"]) == pytest.approx(
        weights["loss.perceptual"])
    assert parent.data.tags["best.variants"] == "ytmt-ucs"
    assert parent.data.metrics["best_val_psnr_t"] == pytest.approx(last.value)
    # the train stage reads best.yaml's weights as dotted overrides: they must validate
    from ytmt.config import to_dict
    from ytmt.params import load_params, resolve_params
    from ytmt.sweep.records import read_best

    overrides, _ = read_best(sweep["out"] / "best.yaml", "ytmt-ucs")
    assert overrides == weights
    resolved = resolve_params(to_dict(load_params(sweep["tmp"] / "params.yaml")), overrides)
    assert resolved.loss.exclusion == pytest.approx(weights["loss.exclusion"])


def test_trial_after_an_early_stopped_trial_gets_its_workers(tmp_path, shards):
    """ASHA stopping a trial must free its Train workers' CPUs: the next trial on the same
    2 CPUs starts instead of dying on the worker-group start timeout. The ASHA metric here is
    the training loss (mode max), which the exclusion weight orders: the 0.0 trial is
    certainly below the rung cutoff after the 2.0 trial, and a third trial follows it."""
    params = sweep_params(
        tmp_path, epochs=2, num_samples=1, metric="train_loss", mode="max",
        overrides={"train.max_steps_per_epoch": 1},
        space={"loss.exclusion": {"type": "grid", "values": [2.0, 0.0, 1.0]}})
    proc = run_tune(params, shards, tmp_path / "out")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    with (tmp_path / "out" / "trials.csv").open() as f:
        rows = {float(r["loss.exclusion"]): r for r in csv.DictReader(f)}
    assert rows[0.0]["status"] == "stopped_early"
    assert rows[1.0]["error"] == "" and int(rows[1.0]["epochs_run"]) >= 1
    assert rows[1.0]["trial_id"] > rows[0.0]["trial_id"]  # it ran after the stopped one

    # A forced re-run of the finished stage (`dvc repro -f -s tune`: DVC deletes the outputs)
    # restores the finished Tune experiment: no trial trains again, the stopped trial is
    # still known as stopped (its decision tag hangs under the same MLflow parent run), and
    # the records come back the same.
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    for name in ("best.yaml", "trials.csv", "summary.json"):
        (tmp_path / "out" / name).unlink()
    again = run_tune(params, shards, tmp_path / "out")
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    assert "resuming sweep" in again.stdout + again.stderr
    with (tmp_path / "out" / "trials.csv").open() as f:
        rows_again = {float(r["loss.exclusion"]): r for r in csv.DictReader(f)}
    assert {k: (r["status"], r["epochs_run"], r["mlflow_run_id"]) for k, r in rows.items()} == \
        {k: (r["status"], r["epochs_run"], r["mlflow_run_id"]) for k, r in rows_again.items()}
    summary_again = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary_again["restored"] is True
    assert summary_again["parent_run_id"] == summary["parent_run_id"]
    assert summary_again["best"] == summary["best"]
