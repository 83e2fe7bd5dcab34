"""Several seeds per variant: config checks, one model folder and MLflow run per seed, and the
evaluation reading them back as mean ± std."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ytmt.config import ConfigError, parse_section
from ytmt.params import parse_params
from ytmt.train.config import TrainConfig
from ytmt.train.trainer import _remove_stale, _training_key, make_loop_config, model_dir

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


def test_layout_and_resume_key_follow_the_seed(tmp_path, shards):
    assert model_dir(tmp_path, "ytmt-ucs", 3, several=False) == tmp_path / "ytmt-ucs"
    assert model_dir(tmp_path, "ytmt-ucs", 3, several=True) == tmp_path / "ytmt-ucs" / "seed3"
    params = parse_params(tiny_params(tmp_path, train__seeds=[0, 1]))
    keys = {s: _training_key(make_loop_config(params, "ytmt-ucs", shards, seed=s))
            for s in (0, 1)}
    assert keys[0] != keys[1]
    # Listing another seed does not change the key of seed 0's run (resume still finds it).
    more = parse_params(tiny_params(tmp_path, train__seeds=[0, 1, 2]))
    assert _training_key(make_loop_config(more, "ytmt-ucs", shards, seed=0)) == keys[0]


def test_stale_models_of_the_other_layout_are_removed(tmp_path):
    root = tmp_path / "ytmt-ucs"
    for d in (root, root / "seed0", root / "seed5"):
        d.mkdir(parents=True, exist_ok=True)
        (d / "model.pt").write_bytes(b"x")
        (d / "info.json").write_text("{}")
    _remove_stale(tmp_path, "ytmt-ucs", (0, 1))  # several: seed0 stays, root and seed5 go
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.pt")) == \
        ["ytmt-ucs/seed0/model.pt"]
    _remove_stale(tmp_path, "ytmt-ucs", (0,))  # one seed: only <variant>/model.pt is kept
    assert not list(tmp_path.rglob("*.pt")) and root.is_dir()


def test_two_seeds_train_two_models_and_evaluate_as_mean_std(tmp_path, shards):
    """The stage with variants [ytmt-uct] and seeds [0, 1]: ytmt-ucs and ytmt-uct trained per
    seed, uct from the ucs model of its own seed; one folder (different weights, info.json
    seed) and one MLflow run per (variant, seed); metrics/plots per (variant, seed); the
    evaluation reports mean ± std over the seeds."""
    from mlflow import MlflowClient

    from ytmt.evaluation.config import EvaluateConfig
    from ytmt.evaluation.evaluate import discover_models, run_evaluation

    params = tiny_params(tmp_path, train__seeds=[0, 1], train__variants=["ytmt-uct"],
                         train__max_steps_per_epoch=1,
                         train__sample_every=5)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out, metrics, plots = tmp_path / "models", tmp_path / "train.json", tmp_path / "plots"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "pipelines" / "train.py"), "--params",
         str(tmp_path / "params.yaml"), "--shards", str(shards), "--out", str(out),
         "--metrics", str(metrics), "--plots", str(plots)], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("model.pt")) == [
        f"{v}/seed{s}/model.pt" for v in ("ytmt-ucs", "ytmt-uct") for s in (0, 1)]
    infos = {s: json.loads((out / "ytmt-ucs" / f"seed{s}" / "info.json").read_text())
             for s in (0, 1)}
    assert [infos[s]["seed"] for s in (0, 1)] == [0, 1]
    weights = {s: torch.load(infos[s]["model_path"], weights_only=True)["state_dict"]
               for s in (0, 1)}
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0]
               if weights[0][k].is_floating_point())

    labels = [f"{v}_seed{s}" for v in ("ytmt-ucs", "ytmt-uct") for s in (0, 1)]
    assert sorted(json.loads(metrics.read_text())) == labels
    assert sorted(p.name for p in plots.iterdir()) == sorted(
        f"{label}.{ext}" for label in labels for ext in ("csv", "png"))

    client = MlflowClient(params["train"]["tracking_uri"])
    exp = client.get_experiment_by_name(params["train"]["experiment"])
    runs = {(r.data.tags["variant"], r.data.tags["seed"]): r
            for r in client.search_runs([exp.experiment_id])}
    assert sorted(runs) == [(v, str(s)) for v in ("ytmt-ucs", "ytmt-uct") for s in (0, 1)]
    for s in (0, 1):
        run = runs[("ytmt-ucs", str(s))]
        assert run.info.run_id == infos[s]["mlflow_run_id"] and run.info.status == "FINISHED"
        assert run.data.params["seed"] == str(s)  # the loop ran with this seed
        stage1 = runs[("ytmt-uct", str(s))].data.params["stage1_checkpoint"]
        assert stage1.endswith(f"ytmt-ucs/seed{s}/model.pt")  # stage 1 of the same seed
    assert len({r.data.tags["ytmt_train_key"] for r in runs.values()}) == 4

    entries = discover_models(out)
    assert [(e.variant, e.seed) for e in entries] == [
        (v, s) for v in ("ytmt-ucs", "ytmt-uct") for s in (0, 1)]
    cfg = EvaluateConfig(protocols=("paper",), visual_cases=0, max_images=2)
    summary = run_evaluation(cfg, out, shards, None, tmp_path / "eval", log_mlflow=False)
    stats = summary["variants"]["ytmt-ucs"]["synthetic"]
    psnr = next(v for k, v in stats.items() if "psnr" in k)
    assert psnr["n"] == 2 and psnr["std"] >= 0
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "seeds 0, 1" in report and f"{psnr['mean']:.2f} ± {psnr['std']:.2f}" in report
