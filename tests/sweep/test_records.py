"""The sweep's records (:mod:`ytmt.sweep.records`): Ray-free, trial rows, the best trial,
the checks on a finished sweep and the files it writes."""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
import textwrap

import pytest
import yaml

from ytmt.config import ConfigError
from ytmt.sweep.records import (
    SweepError,
    SweepInterrupted,
    SweepResult,
    best_row,
    best_yaml,
    check_finished,
    read_best,
    spread_line,
    spread_report,
    trial_id_of,
    trial_row,
    write_outputs,
)

from .conftest import REPO, sweep_params

RAY_BLOCKED = textwrap.dedent("""
    import runpy, sys
    sys.modules["ray"] = None  # every `import ray...` now raises ImportError
    import ytmt.sweep.config, ytmt.sweep.plan, ytmt.sweep.records
    try:
        import ytmt.sweep.run
    except ImportError:
        print("driver needs ray")
    params, shards, out = sys.argv[1:]
    sys.argv = ["tune.py", "--params", params, "--shards", shards, "--out", out]
    try:
        runpy.run_path("pipelines/tune.py", run_name="__main__")
    except SystemExit as end:
        print("exit", end.code)
""")


def test_records_and_the_disabled_stage_need_no_ray(tmp_path, shards):
    params = sweep_params(tmp_path, enabled=False)
    proc = subprocess.run([sys.executable, "-c", RAY_BLOCKED, str(params), str(shards),
                           str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == [
        "driver needs ray", f"tune: tune.enabled is false; wrote {tmp_path / 'out' / 'best.yaml'}",
        "exit 0"]
    assert yaml.safe_load((tmp_path / "out" / "best.yaml").read_text()) == {}


def row(trial_id, **kw):
    args = dict(epochs_run=2, epochs=2, values=[20.0, 21.0], config={"loss.exclusion": 2},
                tags={}, run_id="r1", error=None, space_keys=("loss.exclusion",),
                metric="val_psnr_t", mode="max")
    return trial_row(trial_id, **{**args, **kw})


def test_trial_rows_say_what_happened_to_each_trial():
    done = row("a_00000", tags={"tune_decision": "completed", "ray_node_id.rank1": "n2",
                                "ray_node_id.rank0": "n1", "ray_node_id.trial": "n1"})
    assert done == {
        "trial_id": "a_00000", "status": "completed", "stopped_early": False, "epochs_run": 2,
        "scheduler_decision": "completed", "stopped_at_epoch": "", "val_psnr_t": 21.0,
        "max_val_psnr_t": 21.0, "loss.exclusion": 2.0, "mlflow_run_id": "r1",
        "train_nodes": "n1 n2", "trial_node": "n1", "error": ""}
    stopped = row("a_00001", epochs_run=1, values=[19.0],
                  tags={"tune_decision": "stopped_early", "tune_stopped_at_epoch": "1"})
    assert (stopped["status"], stopped["stopped_early"], stopped["stopped_at_epoch"]) == (
        "stopped_early", True, "1")
    # an interrupted sweep: Tune lists the trial as terminated, nothing decided it
    assert row("a_00002", epochs_run=1, values=[19.0])["status"] == "unfinished"
    failed = row("a_00003", epochs_run=1, error="RayTaskError: boom\n  traceback ...",
                 values=[], config={})
    assert failed["status"] == "error" and failed["error"] == "RayTaskError: boom"
    assert math.isnan(failed["val_psnr_t"]) and math.isnan(failed["loss.exclusion"])
    assert row("a_00004", mode="min", values=[3.0, 1.0, 2.0])["min_val_psnr_t"] == 1.0
    assert trial_id_of({"trial_id": "5d1e2_00001"}, None) == "5d1e2_00001"
    assert trial_id_of({}, "/x/run_trial_5d1e2_00003_3_loss.exclusion=2.0_2025-01-01") == \
        "5d1e2_00003"
    assert trial_id_of({}, None) == "?"


def test_best_trial_is_the_best_final_metric_without_errors():
    rows = [{"trial_id": "a_00000", "status": "completed", "val_psnr_t": 20.0, "error": ""},
            {"trial_id": "a_00001", "status": "stopped_early", "val_psnr_t": 21.0, "error": ""},
            {"trial_id": "a_00002", "status": "error", "val_psnr_t": 99.0, "error": "boom"},
            {"trial_id": "a_00003", "status": "completed", "val_psnr_t": 21.0, "error": ""}]
    # completed trials only: the early-stopped a_00001 was judged at an earlier epoch
    assert best_row(rows, "val_psnr_t", "max")["trial_id"] == "a_00003"
    assert best_row(rows, "val_psnr_t", "min")["trial_id"] == "a_00000"
    tie = [*rows, {**rows[3], "trial_id": "a_00004"}]
    assert best_row(tie, "val_psnr_t", "max")["trial_id"] == "a_00003"  # tie: lowest id
    only_stopped = [rows[1], {**rows[1], "trial_id": "a_00005", "val_psnr_t": 22.0}]
    assert best_row(only_stopped, "val_psnr_t", "max")["trial_id"] == "a_00005"
    with pytest.raises(SweepError, match="no trial reported val_psnr_t: a_00002: boom"):
        best_row([rows[2], {**rows[0], "val_psnr_t": math.nan}], "val_psnr_t", "max")


def test_an_unfinished_or_failed_sweep_is_refused_with_what_to_do(tmp_path):
    done, other = row("a_00000"), row("a_00001")
    check_finished([done, other], 2, tmp_path, "/runs/sweep-x")  # all finished: no error
    with pytest.raises(SweepInterrupted, match="1 of 2 trial\\(s\\) unfinished; run the same "
                                               "command again .*/runs/sweep-x"):
        check_finished([done], 2, tmp_path, "/runs/sweep-x")  # one never started
    with pytest.raises(SweepInterrupted, match="1 of 2"):
        check_finished([done, row("a_00001", epochs_run=1)], 2, tmp_path, "/runs/sweep-x")
    assert not (tmp_path / "trials.csv").exists()
    failed = row("a_00001", epochs_run=0, values=[], error="ValueError: bad")
    with pytest.raises(SweepError, match="1 of 2 trial\\(s\\) failed \\(a_00001: ValueError: "
                                         "bad\\); see .*trials.csv .* Running again retries"):
        check_finished([done, failed], 2, tmp_path, "/runs/sweep-x")
    written = list(csv.DictReader(io.StringIO((tmp_path / "trials.csv").read_text())))
    assert [(r["trial_id"], r["status"]) for r in written] == [("a_00000", "completed"),
                                                               ("a_00001", "error")]


def test_outputs_hold_the_best_weights_every_trial_and_a_summary(tmp_path):
    rows = [row("a_00000"), row("a_00001", epochs_run=1, values=[19.0], config={
        "loss.exclusion": 0.5}, tags={"tune_decision": "stopped_early"})]
    spread = spread_report({"a_00000": [20.0, 21.0], "a_00001": [19.0]}, "a_00000",
                           [20.5, 21.5], (0, 1), "val_psnr_t")
    result = SweepResult(best_trial_id="a_00000", best_metric=21.0, best={"loss.exclusion": 2.0},
                         metric="val_psnr_t", mode="max", parent_run_id="p",
                         experiment_id="1", tracking_uri="sqlite:///x.db",
                         experiment_path="/runs/sweep-x", sweep_key="k", restored=False,
                         trials=rows, variants=["ytmt-ucs"], best_input=14.0, spread=spread)
    write_outputs(tmp_path, result)
    assert yaml.safe_load((tmp_path / "best.yaml").read_text()) == {
        "variants": ["ytmt-ucs"], "weights": {"loss.exclusion": 2.0}}
    written = list(csv.DictReader(io.StringIO((tmp_path / "trials.csv").read_text())))
    assert [r["trial_id"] for r in written] == ["a_00000", "a_00001"]
    assert written[1]["loss.exclusion"] == "0.5" and written[1]["status"] == "stopped_early"
    assert json.loads((tmp_path / "spread.json").read_text()) == spread
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary == {"enabled": True, "best_trial_id": "a_00000", "best_metric": 21.0,
                       "best": {"loss.exclusion": 2.0}, "metric": "val_psnr_t", "mode": "max",
                       "parent_run_id": "p", "experiment_id": "1",
                       "tracking_uri": "sqlite:///x.db", "experiment_path": "/runs/sweep-x",
                       "sweep_key": "k", "restored": False, "num_trials": 2,
                       "stopped_early": ["a_00001"], "variants": ["ytmt-ucs"],
                       "best_input": 14.0, "spread": spread}
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_best_weights_apply_only_to_the_variants_searched_for(tmp_path):
    best = tmp_path / "best.yaml"
    best.write_bytes(best_yaml(["ytmt-ucs"], {"loss.exclusion": 0.2}))
    assert read_best(best, "ytmt-ucs") == ({"loss.exclusion": 0.2}, ["ytmt-ucs"])
    # another single-stage variant, and a two-stage run from the searched one, keep params'
    assert read_best(best, "unet-no-fi") == ({}, ["ytmt-ucs"])
    assert read_best(best, "ytmt-uct") == ({}, ["ytmt-ucs"])
    best.write_text("{}\n")  # a disabled sweep
    assert read_best(best, "ytmt-ucs") == ({}, [])
    best.write_text("loss.exclusion: 0.2\n")  # the old format named no variant
    with pytest.raises(ConfigError, match="best.yaml: expected \\{variants: .*run it again"):
        read_best(best, "ytmt-ucs")
    best.write_text("variants: [ytmt-ucs]\nweights: {exclusion: 0.2}\n")
    with pytest.raises(ConfigError, match="dotted key"):
        read_best(best, "ytmt-ucs")
    with pytest.raises(ConfigError, match="not found \\(run the tune stage\\)"):
        read_best(tmp_path / "nope.yaml", "ytmt-ucs")


def test_spread_compares_the_trials_with_one_config_over_two_seeds():
    # c was stopped at epoch 2 by the scheduler: both spreads are taken at epoch 2
    histories = {"a": [10.0, 12.0, 13.0], "b": [11.0, 12.5, 14.0], "c": [9.0, 11.0]}
    apart = spread_report(histories, "b", [10.5, 12.2, 13.1], (0, 1), "val_psnr_t")
    assert apart == {"metric": "val_psnr_t", "epoch": 2,
                     "trials": {"a": 12.0, "b": 12.5, "c": 11.0}, "trial_spread": 1.5,
                     "best_trial_id": "b", "seed_values": {"0": 12.5, "1": 12.2},
                     "seed_spread": pytest.approx(0.3), "distinguishable": True}
    assert spread_line(apart) == (
        "[tune] at epoch 2 the 3 trial(s) span 1.500 of val_psnr_t; the winner over run seeds "
        "0 and 1 spans 0.300: the sweep can tell its trials apart")
    noisy = spread_report(histories, "b", [10.5, 10.5, 13.1], (0, 1), "val_psnr_t")
    assert noisy["seed_spread"] == 2.0 and noisy["distinguishable"] is False
    assert "cannot tell its trials apart" in spread_line(noisy)
    alone = spread_report({"a": [10.0, 12.0]}, "a", None, (0, 1), "val_psnr_t")
    assert alone == {"metric": "val_psnr_t", "epoch": 2, "trials": {"a": 12.0},
                     "trial_spread": 0.0}
    assert "no replicate" in spread_line(alone)
    with pytest.raises(SweepError, match="replicate reported no val_psnr_t at epoch 2"):
        spread_report(histories, "b", [10.5], (0, 1), "val_psnr_t")
