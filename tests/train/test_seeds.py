"""Runs = variants × seeds (+ two-stage runs): config checks, one model folder and MLflow run
per run, and the evaluation reading them back as mean ± std."""

import csv
import json
import os
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ytmt.config import ConfigError, parse_section
from ytmt.model_store import run_dir
from ytmt.params import parse_params
from ytmt.train.config import Run, TrainConfig
from ytmt.train.matrix import _prepare_tracking, run_jobs
from ytmt.train.trainer import _training_key, make_loop_config

from .conftest import tiny_params

REPO = Path(__file__).resolve().parents[2]


def test_seeds_default_and_validation():
    assert TrainConfig().seeds == (0,)
    assert parse_section(TrainConfig, {"seeds": [3, 1]}, "train").seeds == (3, 1)
    for bad, message in (([], "at least one seed"), ([0, 2, 0], "seed 0 is listed more than"),
                         ([-1], r"train.seeds = \(-1,\): must be >= 0"),
                         ([1.5], r"train.seeds\[0\] = 1.5: expected an integer"),
                         ("0", "expected a list of int")):
        with pytest.raises(ConfigError, match=message):
            parse_section(TrainConfig, {"seeds": bad}, "train")


def test_runs_two_stage_validation():
    cfg = parse_section(TrainConfig, {"variants": ["ytmt-ucs", "unet-no-fi"], "seeds": [0, 1],
                                      "two_stage": [{"variant": "ytmt-uct",
                                                     "stage1": "ytmt-ucs"}]}, "train")
    assert cfg.runs() == [Run("ytmt-ucs", 0), Run("ytmt-ucs", 1), Run("unet-no-fi", 0),
                          Run("unet-no-fi", 1), Run("ytmt-uct", 0, "ytmt-ucs"),
                          Run("ytmt-uct", 1, "ytmt-ucs")]
    for bad, message in (
            ({"variants": ["ytmt-uct"]}, r"'ytmt-uct' is two-stage; list it under two_stage"),
            ({"variants": ["ytmt-ucs", "ytmt-ucs"]}, "listed twice"),
            ({"two_stage": [{"variant": "ytmt-ucs", "stage1": "ytmt-ucs"}]},
             r"two_stage\[0\].variant = 'ytmt-ucs': expected a two-stage variant"),
            ({"two_stage": [{"variant": "ytmt-uct", "stage1": "ytmt-uas"}]},
             "the stage 1 of ytmt-uct is 'ytmt-ucs'"),
            ({"variants": ["unet-no-fi"],
              "two_stage": [{"variant": "ytmt-uct", "stage1": "ytmt-ucs"}]},
             "stage 1 'ytmt-ucs' must be trained too"),
            ({"two_stage": [{"variant": "ytmt-uct"}]}, r"two_stage\[0\].stage1: missing")):
        with pytest.raises(ConfigError, match=message):
            parse_section(TrainConfig, bad, "train")


def test_layout_and_resume_key_follow_the_seed_not_the_run_list(tmp_path, shards):
    assert run_dir(tmp_path, "ytmt-ucs", 3) == tmp_path / "ytmt-ucs" / "seed3"
    params = parse_params(tiny_params(tmp_path, train__seeds=[0, 1]))
    keys = {s: _training_key(make_loop_config(params, "ytmt-ucs", shards, seed=s))
            for s in (0, 1)}
    assert keys[0] != keys[1]
    # Listing another seed or variant, or logging more often, keeps seed 0's key (resume
    # still finds its run); a recipe change does not.
    for change in ({"train__seeds": [0, 1, 2]}, {"train__variants": ["ytmt-ucs", "unet-no-fi"]},
                   {"train__log_every_steps": 1}, {"train__tracking_uri": "sqlite:///x.db"},
                   {"train__fuse_streams": True}):
        more = parse_params(tiny_params(tmp_path, **change))
        assert _training_key(make_loop_config(more, "ytmt-ucs", shards, seed=0)) == keys[0], \
            change
    other = parse_params(tiny_params(tmp_path, train__lr=5e-4))
    assert _training_key(make_loop_config(other, "ytmt-ucs", shards, seed=0)) != keys[0]


def test_two_seeds_train_two_models_and_evaluate_as_mean_std(tmp_path, shards):
    """Runs ytmt-ucs and ytmt-uct (two-stage) × seeds [0, 1] through the train stage script,
    one run per call as DVC's train@/train2@ stages do: uct from the ucs model of its own
    seed; one folder (different weights, info.json seed) and one MLflow run per run; the
    run's metrics row and plots; the evaluation reports mean ± std over the seeds."""
    from mlflow import MlflowClient

    from ytmt.evaluation.config import EvaluateConfig
    from ytmt.evaluation.evaluate import discover_models, run_evaluation

    params = tiny_params(tmp_path, train__seeds=[0, 1], train__variants=["ytmt-ucs"],
                         train__two_stage=[{"variant": "ytmt-uct", "stage1": "ytmt-ucs"}],
                         train__max_steps_per_epoch=1, train__sample_every=5)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out, plots = tmp_path / "models", tmp_path / "plots"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    runs = parse_params(params).train.runs()
    commands, needs = {}, {}
    for run in runs:
        stage1 = ["--stage1", str(run_dir(out, run.stage1, run.seed) / "model.pt")] \
            if run.stage1 else []
        label = f"{run.variant}-seed{run.seed}"
        commands[label] = [
            sys.executable, str(REPO / "pipelines" / "train.py"), "--params",
            str(tmp_path / "params.yaml"), "--variant", run.variant, "--seed", str(run.seed),
            *stage1, "--shards", str(shards), "--out", str(run_dir(out, run.variant, run.seed)),
            "--metrics", str(tmp_path / "metrics" / f"{label}.json"), "--plots", str(plots)]
        if run.stage1:
            needs[label] = frozenset({f"{run.stage1}-seed{run.seed}"})
    # two at a time, each stage 2 after the stage 1 of its seed, as `python -m
    # ytmt.train.matrix --jobs 2` runs DVC's stages (the MLflow store made once, first)
    _prepare_tracking(tmp_path, parse_params(params).train)
    status = run_jobs(commands, needs, jobs=2, env=env, cwd=tmp_path, poll_s=0.2,
                      log=lambda _: None)
    assert status == dict.fromkeys(commands, 0), status  # the runs' output: captured stdout

    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("model.pt")) == [
        f"{v}/seed{s}/model.pt" for v in ("ytmt-ucs", "ytmt-uct") for s in (0, 1)]
    infos = {s: json.loads((out / "ytmt-ucs" / f"seed{s}" / "info.json").read_text())
             for s in (0, 1)}
    assert [infos[s]["seed"] for s in (0, 1)] == [0, 1]
    assert {infos[s]["model_path"] for s in (0, 1)} == {"model.pt"}  # relative to its folder
    weights = {s: torch.load(out / "ytmt-ucs" / f"seed{s}" / infos[s]["model_path"],
                             weights_only=True)["state_dict"] for s in (0, 1)}
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0]
               if weights[0][k].is_floating_point())

    labels = [f"{v}-seed{s}" for v in ("ytmt-ucs", "ytmt-uct") for s in (0, 1)]
    row = json.loads((tmp_path / "metrics" / "ytmt-uct-seed1.json").read_text())
    assert set(row) == {"psnr_t", "ssim_t", "psnr_i", "ssim_i", "img_s"}
    assert sorted(p.relative_to(plots).as_posix() for p in plots.rglob("*.*")) == sorted(
        f"{d}/{label}.{ext}" for label in labels
        for d, ext in (("val_psnr", "csv"), ("train_loss", "csv"), ("curves", "png")))
    assert (plots / "val_psnr" / "ytmt-ucs-seed0.csv").read_text().splitlines()[0] == \
        "epoch,val_psnr_t,val_psnr_t_input"

    client = MlflowClient(params["train"]["tracking_uri"])
    exp = client.get_experiment_by_name(params["train"]["experiment"])
    mruns = {(r.data.tags["variant"], r.data.tags["seed"]): r
             for r in client.search_runs([exp.experiment_id])}
    assert sorted(mruns) == [(v, str(s)) for v in ("ytmt-ucs", "ytmt-uct") for s in (0, 1)]
    for s in (0, 1):
        run = mruns[("ytmt-ucs", str(s))]
        assert run.info.run_id == infos[s]["mlflow_run_id"] and run.info.status == "FINISHED"
        assert run.data.params["seed"] == str(s)  # the loop ran with this seed
        stage1 = mruns[("ytmt-uct", str(s))].data.params["stage1_checkpoint"]
        assert stage1.endswith(f"ytmt-ucs/seed{s}/model.pt")  # stage 1 of the same seed
    assert len({r.data.tags["ytmt_train_key"] for r in mruns.values()}) == 4

    entries = discover_models(out, runs)
    assert [(e.variant, e.seed) for e in entries] == [
        (v, s) for v in ("ytmt-ucs", "ytmt-uct") for s in (0, 1)]
    cfg = EvaluateConfig(protocols=("paper",), visual_cases=0, max_images=2)
    summary = run_evaluation(cfg, out, shards, None, tmp_path / "eval", log_mlflow=False,
                             runs=runs)
    # mean ± sample std over the seeds of each seed's mean PSNR of T, recomputed here from
    # the per-image rows
    with open(tmp_path / "eval" / "per_image.csv") as f:
        rows = [r for r in csv.DictReader(f)
                if r["variant"] == "ytmt-ucs" and r["set"] == "synthetic"]
    per_seed = [[float(r["psnr_t"]) for r in rows if r["seed"] == str(s)] for s in (0, 1)]
    assert [len(p) for p in per_seed] == [2, 2]
    a, b = (sum(p) / 2 for p in per_seed)
    mean, std = (a + b) / 2, abs(a - b) / 2 ** 0.5  # the sample std of two values
    psnr = summary["variants"]["ytmt-ucs"]["synthetic"]["psnr_t"]
    assert psnr["n"] == 2 and std > 0  # two seeds, two different models
    assert psnr["mean"] == pytest.approx(mean, abs=1e-4)
    assert psnr["std"] == pytest.approx(std, abs=1e-4)
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "seeds 0, 1" in report and f"{mean:.2f} ± {std:.2f}" in report
