"""The sweep submitted with ``ray job submit`` to a two-node Ray cluster on loopback: a head
and a worker node with one CPU each (both ``--node-ip-address=127.0.0.1``; Ray reports the
host's address for both, so nodes are told apart by node id)."""

from __future__ import annotations

import csv
import json
import uuid

import pytest
import yaml

from .cluster import LoopbackCluster
from .conftest import REPO, sweep_params

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def test_sweep_job_runs_trials_on_both_nodes(tmp_path, shards):
    # two concurrent trials; a trial driver takes a whole `train_driver` (one per node) and
    # its single worker a whole CPU (one per node): they cannot share a node
    params = sweep_params(
        tmp_path, epochs=1, num_samples=1, scheduler="fifo", max_concurrent_trials=2,
        workers_per_trial=1, cpus_per_worker=1.0, driver_resources={"train_driver": 1.0},
        local_cpus=None,
        space={"loss.exclusion": {"type": "grid", "values": [0.5, 2.0]}})
    out = tmp_path / "out"
    with LoopbackCluster(cpus_per_node=1, resources={"train_driver": 1}) as cluster:
        nodes = cluster.wait_for_nodes(2)
        job = f"ytmt-tune-{uuid.uuid4().hex[:8]}"
        submit = cluster.ray(
            "job", "submit", "--address", cluster.dashboard_url, "--working-dir", str(REPO),
            "--submission-id", job, "--", "python", "pipelines/tune.py",
            "--params", str(params), "--shards", str(shards), "--out", str(out), timeout=480)
        status = cluster.ray("job", "status", job, "--address", cluster.dashboard_url)
        logs = submit.stdout[-6000:] + submit.stderr[-3000:]
        assert f"Job '{job}' succeeded" in status.stdout + status.stderr, logs + status.stdout
        assert submit.returncode == 0, logs
        groups = list(cluster.groups)
    cluster.groups = groups
    assert cluster.alive_processes() == []  # every process the test started is gone

    with (out / "trials.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["completed", "completed"]
    train_nodes = [r["train_nodes"] for r in rows]
    assert all(n in nodes for n in train_nodes), (train_nodes, nodes)
    assert set(train_nodes) == set(nodes)  # one trial trained on each node
    assert {r["trial_node"] for r in rows} == set(nodes)
    best = yaml.safe_load((out / "best.yaml").read_text())
    summary = json.loads((out / "summary.json").read_text())
    winner = next(r for r in rows if r["trial_id"] == summary["best_trial_id"])
    assert best == {"variants": ["ytmt-ucs"],
                    "weights": {"loss.exclusion": float(winner["loss.exclusion"])}}
