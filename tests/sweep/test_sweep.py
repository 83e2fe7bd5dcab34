"""A real 3-trial sweep at tiny scale (width 4, 32 px crops, 1 step per epoch, 2 epochs),
interrupted with Ctrl-C (SIGINT) once its first trial has finished, run again (it resumes),
then run a third time with its outputs deleted (what `dvc repro -f -s tune` does).

One sweep serves every test here (Ray start-up and worker start-up dominate its cost). Its
ASHA metric is the training loss (mode max), which the exclusion weight orders at epoch 1 (one
step from the same weights and data: the same loss terms, plus the weight times the same
exclusion term): the grid runs 2.0 first, then 0.0, which is certainly below the rung cutoff
and stopped early, then 1.0, which must get the stopped trial's workers. The interruption
falls after the 2.0 trial, so the 0.0 trial is stopped by the resumed sweep against the rung
record of the first (ytmt.sweep.scheduler.ResumableASHA): with Tune's own ASHA, whose rungs
start empty again, it would be the first at its rung and run on.
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
METRIC = "train_loss"
GRID = [2.0, 0.0, 1.0]


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


def _records(out: Path) -> dict:
    with (out / "trials.csv").open() as f:
        rows = list(csv.DictReader(f))
    return {"rows": rows, "summary": json.loads((out / "summary.json").read_text()),
            "best": yaml.safe_load((out / "best.yaml").read_text())}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, shards):
    tmp = tmp_path_factory.mktemp("sweep")
    params = sweep_params(
        tmp, epochs=EPOCHS, num_samples=1, metric=METRIC, mode="max",
        overrides={"train.max_steps_per_epoch": 1},
        space={"loss.exclusion": {"type": "grid", "values": GRID}})
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
    records = _records(out)
    # a forced re-run of the finished stage (`dvc repro -f -s tune`: DVC deletes the outputs)
    for name in ("best.yaml", "trials.csv", "summary.json"):
        (out / name).unlink()
    third = run_tune(params, shards, out)
    assert third.returncode == 0, third.stdout[-4000:] + third.stderr[-4000:]
    return {"tmp": tmp, "out": out, "rc1": rc1, "log1": log1.read_text(), "first": first,
            "second": second.stdout + second.stderr, "third": third.stdout + third.stderr,
            **records, "again": _records(out)}


def _by_weight(rows: list[dict]) -> dict[float, dict]:
    return {float(r["loss.exclusion"]): r for r in rows}


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


def test_every_trial_is_an_mlflow_child_of_the_sweep_run(sweep):
    c = _client(sweep["tmp"])
    exp = c.get_experiment_by_name("ytmt-tune")
    parents = c.search_runs([exp.experiment_id], filter_string="tags.ytmt_role = 'sweep'")
    assert len(parents) == 1  # the resumed and the forced re-run sweeps reused its parent run
    parent = parents[0]
    assert parent.info.run_id == sweep["summary"]["parent_run_id"]
    assert parent.info.status == "FINISHED"
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    source = parent.data.tags["mlflow.source.name"]  # provenance, as mlflow.start_run sets it
    assert parent.data.tags["mlflow.user"] and source
    children = c.search_runs([exp.experiment_id], filter_string=(
        f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"))
    assert len(children) == len(sweep["rows"]) == len(GRID)
    by_trial = {r.data.tags["ytmt_tune_trial_id"]: r for r in children}
    assert set(by_trial) == {r["trial_id"] for r in sweep["rows"]}
    for row in sweep["rows"]:
        run = by_trial[row["trial_id"]]
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.source.name"] == source  # the driver's, not Ray's worker
        assert row["mlflow_run_id"] == run.info.run_id
        # the sampled weight as a param
        assert float(run.data.params["loss.exclusion"]) == float(row["loss.exclusion"])
        assert run.data.params["train.max_steps_per_epoch"] == "1"  # tune.overrides applied
        steps = sorted(m.step for m in c.get_metric_history(run.info.run_id, METRIC))
        epochs = int(row["epochs_run"])
        # a trial ASHA stops may finish (and log) one more epoch while Tune ends it
        assert steps == list(range(1, len(steps) + 1)) and epochs <= len(steps) <= EPOCHS
        if row["status"] == "completed":
            assert len(steps) == epochs == EPOCHS
        assert run.data.tags["ray_node_id.rank0"] == row["train_nodes"]
    assert sorted(float(r["loss.exclusion"]) for r in sweep["rows"]) == sorted(GRID)


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
            run.info.run_id, METRIC) if m.step == 1)
    # ASHA (grace 1, reduction 2, mode max) stops the second trial at epoch 1 iff it is below
    # the first; the first trial to reach the rung is never stopped there. The exclusion
    # weight orders the epoch-1 loss: the second trial (weight 0) is below the first (2).
    a, b, _ = sorted(sweep["rows"], key=lambda r: r["trial_id"])
    assert (float(a["loss.exclusion"]), float(b["loss.exclusion"])) == (2.0, 0.0)
    assert a["status"] == "completed"
    assert epoch1[b["trial_id"]] < epoch1[a["trial_id"]]
    assert b["status"] == "stopped_early"
    parent = c.get_run(sweep["summary"]["parent_run_id"])
    assert parent.data.metrics["trials_stopped_early"] == sum(
        r["status"] == "stopped_early" for r in sweep["rows"])
    assert sweep["summary"]["stopped_early"] == [
        r["trial_id"] for r in sweep["rows"] if r["status"] == "stopped_early"]


def test_best_yaml_holds_the_best_trials_weights(sweep):
    rows = [r for r in sweep["rows"] if r["status"] == "completed"]  # ASHA's survivors
    best = max(rows, key=lambda r: float(r[METRIC]))
    assert sweep["summary"]["best_trial_id"] == best["trial_id"]
    assert sweep["best"] == {"variants": ["ytmt-ucs"], "weights": {
        "loss.exclusion": pytest.approx(float(best["loss.exclusion"]))}}
    weights = sweep["best"]["weights"]
    c = _client(sweep["tmp"])
    last = max(c.get_metric_history(best["mlflow_run_id"], METRIC), key=lambda m: m.step)
    assert sweep["summary"]["best_metric"] == pytest.approx(last.value)
    parent = c.get_run(sweep["summary"]["parent_run_id"])
    assert float(parent.data.tags["best.loss.exclusion"]) == pytest.approx(
        weights["loss.exclusion"])
    assert parent.data.tags["best.variants"] == "ytmt-ucs"
    assert parent.data.metrics[f"best_{METRIC}"] == pytest.approx(last.value)
    # the train stage reads best.yaml's weights as dotted overrides: they must validate
    from ytmt.config import to_dict
    from ytmt.params import load_params, resolve_params
    from ytmt.sweep.records import read_best

    overrides, _ = read_best(sweep["out"] / "best.yaml", "ytmt-ucs")
    assert overrides == weights
    resolved = resolve_params(to_dict(load_params(sweep["tmp"] / "params.yaml")), overrides)
    assert resolved.loss.exclusion == pytest.approx(weights["loss.exclusion"])


def test_trial_after_an_early_stopped_trial_gets_its_workers(sweep):
    """ASHA stopping a trial must free its Train workers' CPUs: the next trial on the same
    2 CPUs starts instead of dying on the worker-group start timeout. The stop happens in
    the resumed sweep (the first was interrupted once the 2.0 trial finished), so the 1.0
    trial that follows runs on the same Ray as the stopped one."""
    rows = _by_weight(sweep["rows"])
    assert rows[0.0]["status"] == "stopped_early"
    stopped = f"trial {rows[0.0]['trial_id']} stopped early by the scheduler"
    assert stopped in sweep["second"] and stopped not in sweep["log1"]
    assert rows[1.0]["error"] == "" and int(rows[1.0]["epochs_run"]) >= 1
    assert rows[1.0]["trial_id"] > rows[0.0]["trial_id"]  # it ran after the stopped one


def test_a_forced_rerun_restores_the_finished_sweep(sweep):
    """A forced re-run of the finished stage (`dvc repro -f -s tune`: DVC deletes the
    outputs) restores the finished Tune experiment: no trial trains again, the stopped trial
    is still known as stopped (its decision tag hangs under the same MLflow parent run), and
    the records come back the same."""
    assert "resuming sweep" in sweep["third"]
    assert "stopped early by the scheduler" not in sweep["third"]  # no trial ran again
    rows, rows_again = _by_weight(sweep["rows"]), _by_weight(sweep["again"]["rows"])
    assert {k: (r["status"], r["epochs_run"], r["mlflow_run_id"]) for k, r in rows.items()} == \
        {k: (r["status"], r["epochs_run"], r["mlflow_run_id"]) for k, r in rows_again.items()}
    summary, summary_again = sweep["summary"], sweep["again"]["summary"]
    assert summary_again["restored"] is True
    assert summary_again["parent_run_id"] == summary["parent_run_id"]
    assert summary_again["best"] == summary["best"]
    assert sweep["again"]["best"] == sweep["best"]
