"""The DVC stage end to end (in-process workers) and the fast failures before any worker."""

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from ytmt.params import parse_params
from ytmt.precision import resolve_precision
from ytmt.tracking import TrackingUnavailable
from ytmt.train.trainer import ShardsMissing, train_variant

from .conftest import tiny_params

REPO = Path(__file__).resolve().parents[2]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_mlflow_fails_within_seconds_before_workers(tmp_path, shards):
    params = parse_params(tiny_params(tmp_path, train__num_workers=2))
    t0 = time.perf_counter()
    with pytest.raises(TrackingUnavailable, match="not reachable"):
        train_variant(params, "ytmt-ucs", shards, tmp_path / "models", seed=0,
                      tracking_uri=f"http://127.0.0.1:{_closed_port()}")
    assert time.perf_counter() - t0 < 10
    assert not (tmp_path / "ray_results").exists() and not (tmp_path / "models").exists()


@pytest.mark.parametrize("make", ["missing", "incomplete"])
def test_missing_shards_fail_within_seconds_before_workers(tmp_path, make):
    shard_dir = tmp_path / "shards"
    if make == "incomplete":
        (shard_dir / "train").mkdir(parents=True)  # no manifest.json: synthesis never ended
    params = parse_params(tiny_params(tmp_path, train__num_workers=2))
    t0 = time.perf_counter()
    with pytest.raises(ShardsMissing, match=str(shard_dir)):
        train_variant(params, "ytmt-ucs", shard_dir, tmp_path / "models", seed=0)
    assert time.perf_counter() - t0 < 10
    assert not (tmp_path / "ray_results").exists()


def _png_b64(height: int, width: int) -> str:
    rng = np.random.default_rng(height)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def test_train_stage_runs_one_run_and_logs_everything(tmp_path, shards):
    """`python pipelines/train.py --variant ytmt-ucs --seed 0` (the DVC stage train@ytmt-ucs-0)
    on two Ray Train workers with the tune stage's weights: a quiet console (one line per
    epoch, one warning, no Ray internals) with the full log in outputs/logs/, the model
    folder, the run's metrics row and plots, and an
    MLflow run with the resolved config, provenance, its datasets, per-epoch metrics and
    sample images at step = epoch; the logged model loads back with mlflow.pyfunc and
    separates images of two sizes. (Two-stage runs and seeds: tests/train/test_seeds.py.)"""
    import mlflow
    from mlflow import MlflowClient

    from ytmt.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG

    params = tiny_params(tmp_path, train__epochs=2, train__max_steps_per_epoch=1,
                         train__sample_every=1, train__num_workers=2,  # Ray Train DDP
                         train__precision="auto")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "best.yaml").write_text(  # as the tune stage writes it (sweep.records.best_yaml)
        "variants: [ytmt-ucs]\nweights: {loss.perceptual: 0.05}\n")
    out, metrics, plots = tmp_path / "model", tmp_path / "val.json", tmp_path / "plots"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(DVC_EXP_NAME="quiet-tuna", DVC_EXP_BASELINE_REV="0123abcd")  # as dvc exp run
    proc = subprocess.run(
        [sys.executable, str(REPO / "pipelines" / "train.py"), "--params",
         str(tmp_path / "params.yaml"), "--variant", "ytmt-ucs", "--seed", "0", "--shards",
         str(shards), "--best", str(tmp_path / "best.yaml"), "--out", str(out), "--metrics",
         str(metrics), "--plots", str(plots)], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # one progress line per epoch, once; the random-VGG warning once; no Ray internals
    epochs = [line for line in proc.stdout.splitlines() if line.startswith("[ytmt-ucs] epoch")]
    assert [line.split()[2] for line in epochs] == ["1/2", "2/2"], proc.stdout
    assert all("val PSNR T" in line and "ETA" in line for line in epochs)
    console = proc.stdout + proc.stderr
    assert console.count("SEEDED RANDOM") == 1, console  # vgg_weights random: said once
    for noise in ("Reporting training result", "PreemptionWatcher", "Token authentication",
                  "pid=", "Started a local Ray", "INFO mlflow", "Downloading artifacts"):
        assert noise not in console, (noise, console)
    log = (tmp_path / "outputs" / "logs" / "train-ytmt-ucs-seed0.log").read_text()
    assert "SEEDED RANDOM" in log and "INFO mlflow" in log  # the full log
    assert set(json.loads(metrics.read_text())) == {"psnr_t", "ssim_t", "psnr_i", "ssim_i",
                                                    "img_s"}
    assert (plots / "curves" / "ytmt-ucs-seed0.png").stat().st_size > 0
    rows = (plots / "val_psnr" / "ytmt-ucs-seed0.csv").read_text().splitlines()
    assert rows[0] == "epoch,val_psnr_t,val_psnr_t_input" and len(rows) == 3
    info = json.loads((out / "info.json").read_text())
    assert info["model_path"] == "model.pt" and info["vgg_weights"] == "random"

    uri = params["train"]["tracking_uri"]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(params["train"]["experiment"])
    assert exp.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND  # the UI opens on runs
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_id == info["mlflow_run_id"]
    assert run.data.params["loss.perceptual"] == "0.05"  # the tune stage's override
    assert run.data.params["vgg_weights_used"] == "random"
    assert run.data.params["train.precision"] == "auto"
    assert run.data.params["precision_used"] == resolve_precision("auto", "cpu")
    assert run.data.tags["vgg_weights"] == "random"
    tags = run.data.tags  # provenance, as mlflow.start_run records it
    assert tags["mlflow.user"] and tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.source.name"].endswith("pipelines/train.py")
    assert tags["dvc.exp_name"] == "quiet-tuna" and tags["dvc.baseline_rev"] == "0123abcd"
    if (REPO / ".git").exists():
        assert len(tags["mlflow.source.git.commit"]) == 40
    contexts = {(d.dataset.name, next(t.value for t in d.tags if t.key == "mlflow.data.context"))
                for d in run.inputs.dataset_inputs}
    assert contexts == {("shards/train", "train"), ("shards/val", "validation")}
    digest = json.loads((shards / "manifest.json").read_text())["fingerprint"][:36]
    assert {d.dataset.digest for d in run.inputs.dataset_inputs} == {digest}
    for key in ("val_psnr_t", "val_ssim_r_strict", "loss_exclusion", "lr", "images_per_s"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2]
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    steps = sorted(int(p.split("+step+")[1].split("+")[0]) for p in images
                   if p.startswith("images/validation_samples+") and p.endswith(".png"))
    assert steps == [1, 2], images
    assert [a.path for a in client.list_artifacts(run.info.run_id, "curves")] == \
        ["curves/loss_curves.png"]

    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(info["model_uri"])
    for h, w in ((40, 56), (64, 48)):
        pred = model.predict(pd.DataFrame({"image": [_png_b64(h, w)]}))
        t_img = Image.open(io.BytesIO(base64.b64decode(pred["transmission"][0])))
        assert t_img.size == (w, h)


class _FailingSecondEpoch:
    """A train loop: the shared loop on real shards whose training data fail when the second
    epoch starts (after the first epoch's checkpoint was taken)."""

    def __call__(self, config):
        from ytmt.train.loop import shard_dataset, train_loop_per_worker

        def dataset_fn(root, split, *args):
            ds = shard_dataset(root, split, *args)
            if split == "train":
                set_epoch = ds.set_epoch

                def failing_set_epoch(epoch):
                    if epoch == 1:
                        raise RuntimeError("the training data broke")
                    set_epoch(epoch)

                ds.set_epoch = failing_set_epoch
            return ds

        train_loop_per_worker(dict(config, dataset_fn=dataset_fn))


def test_in_process_training_leaves_no_checkpoint_folder_finished_or_failed(
        tmp_path, shards, monkeypatch):
    """The in-process loop keeps its last checkpoint folder for the caller to read:
    train_variant removes it whether the run finished or failed (a failed run left it in the
    system's temporary folder)."""
    import tempfile

    system_tmp = tmp_path / "system_tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    params = parse_params(tiny_params(tmp_path, train__epochs=2, train__max_steps_per_epoch=1))
    trained = train_variant(params, "ytmt-ucs", shards, tmp_path / "ok", seed=0)
    assert trained.epochs == 2 and Path(trained.model_path).is_file()
    assert not list(system_tmp.glob("ytmt-ckpt-*"))
    with pytest.raises(RuntimeError, match="the training data broke"):
        train_variant(params, "ytmt-ucs", shards, tmp_path / "failed", seed=1,
                      train_loop=_FailingSecondEpoch())
    assert not list(system_tmp.glob("ytmt-ckpt-*"))
