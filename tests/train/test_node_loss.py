"""A node lost mid-run, as a team meets it: a two-node Ray cluster on loopback whose worker
node lives in its own mount namespace (the repository hidden, its own working directory, no
driver environment), shards and checkpoints in an S3-compatible bucket (moto's server), and
an MLflow server with proxied artifacts, all on 127.0.0.1. ``pipelines/train.py`` joins the
cluster (``RAY_ADDRESS``) with two workers, one per node, and ``train.min_workers: 1``. The
worker node is killed (its whole process group, like a machine gone) after the first
checkpoint is in the bucket: the run carries on from that checkpoint on the node left, and
every epoch is logged exactly once, each with the world size it ran at."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from .conftest import CREDENTIALS, tiny_params

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
GRACE_S = 6  # the controller registers a reported checkpoint when it next polls (2 s)


def test_training_survives_the_loss_of_a_node(tmp_path, shards, s3_server, mlflow_server):
    import pyarrow.fs as pafs

    from tests.sweep.cluster import LoopbackCluster

    from .test_object_storage import _upload

    port, fs = s3_server
    uri, store = mlflow_server
    endpoint = f"endpoint_override=127.0.0.1:{port}&scheme=http"
    _upload(fs, shards, "ytmt/shards")
    params = tiny_params(tmp_path, train__num_workers=2, train__min_workers=1,
                         train__cpus_per_worker=1, train__max_failures=3, train__epochs=8,
                         train__tracking_uri=uri,  # 8 steps an epoch on 2 workers: ~3 s
                         train__storage_path=f"s3://ytmt/ray?{endpoint}")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))

    def checkpoints() -> list[str]:
        found = fs.get_file_info(pafs.FileSelector("ytmt/ray", recursive=True,
                                                   allow_not_found=True))
        return sorted(i.path for i in found if i.base_name == "checkpoint.pt")

    # the worker node sees neither the repository nor this test's files (the MLflow server's
    # store among them): only the bucket and the server, over HTTP
    with LoopbackCluster(cpus_per_node=1, hide=(REPO, tmp_path)) as cluster:
        env = {**os.environ, **CREDENTIALS, "RAY_ADDRESS": cluster.gcs_address,
               "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": cluster.env["RAY_AUTH_TOKEN"],
               "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        env.pop("MLFLOW_TRACKING_URI", None)
        cmd = [sys.executable, "pipelines/train.py", "--params", str(tmp_path / "params.yaml"),
               "--variant", "ytmt-ucs", "--seed", "0", "--shards", f"s3://ytmt/shards?{endpoint}",
               "--out", str(tmp_path / "model"), "--metrics", str(tmp_path / "metrics.json"),
               "--plots", str(tmp_path / "plots")]
        log = tmp_path / "train.log"
        killed_at = None
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                deadline = time.monotonic() + 480
                while proc.poll() is None and time.monotonic() < deadline:
                    if killed_at is None and checkpoints():
                        time.sleep(GRACE_S)
                        os.killpg(cluster.groups[1], signal.SIGKILL)  # the worker node, all
                        killed_at = len(checkpoints())
                    time.sleep(1)
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=60)
        text = log.read_text()
        assert killed_at is not None, text[-4000:]
        assert proc.returncode == 0, text[-4000:]

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(params["train"]["experiment"])
    (run,) = client.search_runs([exp.experiment_id])  # one run across the lost node
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "world_size")
    sizes = {m.step: m.value for m in history}
    assert sorted(sizes) == list(range(1, 9)), sizes  # every epoch: none lost
    assert sizes[1] == 2 and sizes[8] == 1, sizes  # two nodes, then the one left
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_psnr_t")]
    assert sorted(steps) == list(range(1, 9)), steps  # and none repeated
    (logged,) = client.search_logged_models([exp.experiment_id])  # the model: on the server
    assert logged.source_run_id == run.info.run_id
