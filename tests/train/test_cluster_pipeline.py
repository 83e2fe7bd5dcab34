"""The whole pipeline on a cluster, as a team runs it (docs/cluster.md): `dvc repro` on the
head node with ``RAY_ADDRESS``, ``MLFLOW_TRACKING_URI``, ``YTMT_RAY_STORAGE`` and
``YTMT_TUNE_STORAGE`` set and ``synthesize.publish`` naming a bucket. The cluster is two Ray
nodes on loopback with one CPU each; the worker node lives in its own mount namespace where
the repository, the project copy and this test's files are hidden, with its own working
directory and none of the driver's environment. The shards, Ray checkpoints and Tune state
are in an S3-compatible bucket (moto's server), the runs, models and registry on an MLflow
server with proxied artifacts, all on 127.0.0.1.

One `dvc repro` runs every stage: the synthesize stage uploads the shard set; the sweep's
trials and the training runs (a single-stage run and the two-stage run built on it) have
two workers of one CPU each, so every one of them trains on both nodes, from the bucket's
shards; evaluation and registration follow the runs to the server. Nothing lands in a local
SQLite file, and a second `dvc repro` re-runs only the always-run scan."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from tests.test_pipeline_e2e import _commit, _copy_repo, _ran

from .conftest import CREDENTIALS

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _params(repo: Path, bucket: str) -> dict:
    """params.yaml, smaller: 32 training mixtures, two epochs of two steps, one variant, its
    two-stage run, a two-trial sweep of one epoch (no replicate), and two workers of one CPU
    for every run (one per node); the shards published to the bucket."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["synthesize"].update(train_mixtures=32, val_mixtures=4, test_mixtures=4,
                                publish=f"s3://ytmt/shards?{bucket}")
    params["train"].update(epochs=2, max_steps_per_epoch=2, num_workers=2, cpus_per_worker=1,
                           variants=["ytmt-ucs"], seeds=[0],
                           two_stage=[{"variant": "ytmt-uct", "stage1": "ytmt-ucs"}])
    params["tune"].update(num_samples=2, epochs=1, grace_period=1, replicate=False)
    params["evaluate"].update(max_images=2, visual_cases=1)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return params


def test_dvc_repro_runs_every_stage_across_two_nodes_with_shared_storage_only(
        tmp_path, s3_server, mlflow_server):
    from tests.sweep.cluster import LoopbackCluster

    port, fs = s3_server
    uri, store = mlflow_server
    bucket = f"endpoint_override=127.0.0.1:{port}&scheme=http"
    repo = tmp_path / "repo"
    repo.mkdir()
    _copy_repo(repo)
    params = _params(repo, bucket)
    _commit(repo, "cluster params")

    with LoopbackCluster(cpus_per_node=1, resources={"train_driver": 1},
                         hide=(REPO, tmp_path)) as cluster:
        nodes = cluster.wait_for_nodes(2)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env.update(CREDENTIALS, RAY_ADDRESS=cluster.gcs_address, RAY_AUTH_MODE="token",
                   RAY_AUTH_TOKEN=cluster.env["RAY_AUTH_TOKEN"], MLFLOW_TRACKING_URI=uri,
                   YTMT_RAY_STORAGE=f"s3://ytmt/ray?{bucket}",
                   YTMT_TUNE_STORAGE=f"s3://ytmt/tune?{bucket}", DVC_NO_ANALYTICS="1",
                   PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
        if env.get("PYTHONPATH"):
            env["PYTHONPATH"] = str(repo)

        def dvc(*args: str) -> str:
            log = tmp_path / "dvc.log"  # streamed: what a stage printed before a hang
            with log.open("w") as out:
                proc = subprocess.run([str(BIN / "dvc"), *args], cwd=repo, env=env,
                                      stdout=out, stderr=subprocess.STDOUT, timeout=600)
            text = log.read_text()
            assert proc.returncode == 0, f"dvc {' '.join(args)}:\n{text[-8000:]}"
            return text

        first = dvc("repro")
        assert _ran(first) == {"scan", "fetch", "synthesize", "tune", "train@ytmt-ucs-0",
                               "train2@run0-0", "evaluate", "register"}, first[-4000:]
        _commit(repo, "pipeline results (dvc.lock)")
        assert _ran(dvc("repro")) == {"scan"}

    # the shards the runs read: the bucket's copy of the synthesize stage's folder
    published = json.loads((repo / "outputs/metrics/synthesize.json").read_text())["published"]
    assert published["uri"] == params["synthesize"]["publish"]
    manifest = fs.open_input_stream("ytmt/shards/manifest.json").read()
    assert manifest == (repo / "outputs/shards/manifest.json").read_bytes()

    # the sweep: both trials trained on both nodes, and best.yaml reached the training run
    with (repo / "outputs/tune/trials.csv").open() as f:
        trials = list(csv.DictReader(f))
    assert [t["status"] for t in trials] == ["completed", "completed"], trials
    for t in trials:
        assert set(t["train_nodes"].split()) == set(nodes), (t["train_nodes"], nodes)
    best = yaml.safe_load((repo / "outputs/tune/best.yaml").read_text())

    # every run, model and registry entry on the server; no SQLite store in the project
    client = MlflowClient(uri, registry_uri=uri)  # not a registry an earlier test set
    train_exp = client.get_experiment_by_name(params["train"]["experiment"])
    runs = {r.data.tags["variant"]: r for r in client.search_runs([train_exp.experiment_id])}
    assert set(runs) == {"ytmt-ucs", "ytmt-uct"}
    for variant, run in runs.items():
        assert run.info.status == "FINISHED", variant
        sizes = {m.value for m in client.get_metric_history(run.info.run_id, "world_size")}
        assert sizes == {2.0}, (variant, sizes)  # two 1-CPU workers: one on each node
        sources = [i.dataset.source for i in run.inputs.dataset_inputs]
        assert any("s3://ytmt/shards/train?" in src for src in sources), sources
        assert any(k.startswith("test_synthetic_") for k in run.data.metrics), variant
    assert float(runs["ytmt-ucs"].data.params["loss.exclusion"]) == pytest.approx(
        best["weights"]["loss.exclusion"])
    logged = client.search_logged_models([train_exp.experiment_id])
    assert {m.source_run_id for m in logged} == {r.info.run_id for r in runs.values()}
    tune_exp = client.get_experiment_by_name(params["tune"]["experiment"])
    assert len(client.search_runs([tune_exp.experiment_id])) == 1 + len(trials)
    champion = client.get_model_version_by_alias("ytmt", "champion")
    assert champion.run_id in {r.info.run_id for r in runs.values()}
    assert not (repo / "mlflow.db").exists() and not (repo / "mlruns").exists()
    assert any((store / "artifacts").rglob("*.pt")), "no model artifact on the server"
