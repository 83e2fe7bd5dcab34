"""ytmt.cluster: URIs that keep their query, the runtime env a cluster driver ships, and the
guards that refuse node-local settings on a cluster of more than one node.

The ``cluster`` tests start a real two-node Ray on loopback whose worker node runs in its
own mount namespace: the repository (and with it the editable ``ytmt``) and a "node-local"
folder are hidden there behind empty bind mounts, its working directory is its own, and it
has none of the driver's environment variables."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ytmt.cluster import (
    FORWARDED_ENV,
    ClusterSetupError,
    check_cluster,
    package_dir,
    tracking_target,
    uri_join,
    uri_with_suffix,
    worker_runtime_env,
)
from ytmt.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
TWO_NODES = [{"NodeID": "a" * 56, "Alive": True}, {"NodeID": "b" * 56, "Alive": True}]


# --------------------------------------------------------------------------- URIs

def test_uri_join_keeps_the_endpoint_query_at_the_end():
    base = "s3://bucket/prefix?endpoint_override=http://127.0.0.1:9000&scheme=http"
    assert uri_join(base, "ytmt-ucs-seed0-abc") == (
        "s3://bucket/prefix/ytmt-ucs-seed0-abc?endpoint_override=http://127.0.0.1:9000"
        "&scheme=http")
    # the naive join the trainer used puts the name inside the query string
    assert f"{base}/run".endswith("9000&scheme=http/run")
    assert uri_join("s3://bucket", "a", "b/") == "s3://bucket/a/b"
    assert uri_join("/shared/ray", "run") == "/shared/ray/run"


def test_uri_with_suffix_appends_to_the_last_segment():
    base = "s3://b/tune/sweep-x?endpoint_override=http://h:9000"
    assert uri_with_suffix(base, "_asha.pkl") == "s3://b/tune/sweep-x_asha.pkl?endpoint_override=http://h:9000"
    assert uri_with_suffix("/shared/tune/sweep-x", "_asha.pkl") == "/shared/tune/sweep-x_asha.pkl"


# --------------------------------------------------------------------------- runtime env

def test_worker_runtime_env_ships_this_package_and_named_variables(monkeypatch):
    for name in FORWARDED_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("YTMT_VGG19_PATH", "/models/vgg19-dcbb9e9d.pth")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cret")
    monkeypatch.setenv("UNRELATED_VARIABLE", "x")
    env = worker_runtime_env()
    assert env["py_modules"] == [str(package_dir())]
    assert (package_dir() / "cluster.py").is_file()
    assert env["env_vars"] == {"YTMT_VGG19_PATH": "/models/vgg19-dcbb9e9d.pth",
                               "AWS_SECRET_ACCESS_KEY": "s3cret"}


# --------------------------------------------------------------------------- guards

@pytest.mark.parametrize(("uri", "target"), [
    ("sqlite:////work/mlflow.db", "/work"), ("file:///work/mlruns", "/work/mlruns"),
    ("http://127.0.0.1:5000/", "http://127.0.0.1:5000/health"),
    ("https://mlflow.internal", "https://mlflow.internal/health"),
    ("postgresql://db/mlflow", None)])
def test_what_each_node_must_reach_for_the_tracking_store(uri, target):
    assert tracking_target(uri) == target


def test_one_node_is_not_checked():
    assert check_cluster(tracking_uri="sqlite:////tmp/x.db", use_gpu=True,
                         gpus_per_worker=0.5, num_workers=2, nodes=TWO_NODES[:1]) == 1


def test_two_nodes_refuse_fractional_gpus():
    with pytest.raises(ClusterSetupError, match=r"gpus_per_worker = 0.5") as err:
        check_cluster(tracking_uri="http://mlflow.internal:5000", use_gpu=True,
                      gpus_per_worker=0.5, num_workers=2, nodes=TWO_NODES)
    assert isinstance(err.value, ConfigError)  # a stage prints it as one line, exit code 2
    # whole GPUs, or fractional on CPU-only runs, pass
    check_cluster(tracking_uri="postgresql://db/mlflow", use_gpu=True,
                  gpus_per_worker=1.0, num_workers=2, nodes=TWO_NODES)


def test_stage1_checkpoint_reaches_workers_as_an_absolute_path(tmp_path, monkeypatch):
    from ytmt.params import Params
    from ytmt.train.trainer import make_loop_config

    monkeypatch.chdir(tmp_path)
    config = make_loop_config(Params(), "ytmt-uct", "shards",
                              stage1_checkpoint="outputs/models/ytmt-ucs/seed0/model.pt")
    assert config["stage1_checkpoint"] == str(tmp_path / "outputs/models/ytmt-ucs/seed0/model.pt")
    assert config["shards"] == str(tmp_path / "shards")


# --------------------------------------------------------------------------- a real cluster

DRIVER = textwrap.dedent("""
    import json, os, sys
    import ray
    from ytmt.ray_local import init_ray
    from ytmt.cluster import ClusterSetupError, alive_nodes, check_paths_on_nodes

    address, shared, local = sys.argv[1:4]
    init_ray(address)
    nodes = alive_nodes()

    @ray.remote(num_cpus=0)
    def where():
        import ytmt
        return {"ytmt": ytmt.__file__, "vgg": os.environ.get("YTMT_VGG19_PATH"),
                "repo_visible": os.path.isfile(os.path.join(%(repo)r, "pyproject.toml"))}

    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy as Pin
    seen = [ray.get(where.options(scheduling_strategy=Pin(n["NodeID"], soft=False)).remote())
            for n in nodes]
    out = {"nodes": len(nodes), "seen": seen}
    check_paths_on_nodes({"train.storage_path": shared}, nodes)
    out["shared"] = "ok"
    try:
        check_paths_on_nodes({"train.storage_path": local}, nodes)
        out["local"] = "accepted"
    except ClusterSetupError as err:
        out["local"] = str(err)
    from ytmt.cluster import check_cluster
    try:
        check_cluster(tracking_uri=f"sqlite:///{local}/mlflow.db", nodes=nodes)
        out["sqlite"] = "accepted"
    except ClusterSetupError as err:
        out["sqlite"] = str(err)
    import http.server, threading
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    check_cluster(tracking_uri=f"http://127.0.0.1:{server.server_port}", nodes=nodes)
    out["loopback_server"] = "ok"
    server.shutdown()
    server.server_close()
    try:
        check_cluster(tracking_uri=f"http://127.0.0.1:{server.server_port}", nodes=nodes)
        out["stopped_server"] = "accepted"
    except ClusterSetupError as err:
        out["stopped_server"] = str(err)
    out["markers_left"] = sorted(os.listdir(shared)) + sorted(os.listdir(local))
    print("RESULT " + json.dumps(out))
""")


@pytest.mark.slow
@pytest.mark.cluster
def test_a_node_without_the_repo_gets_the_code_and_refuses_node_local_storage(tmp_path):
    from tests.sweep.cluster import LoopbackCluster

    shared, local = tmp_path / "shared", tmp_path / "node_local"
    shared.mkdir()
    local.mkdir()
    script = tmp_path / "driver.py"
    script.write_text(DRIVER % {"repo": str(REPO)})
    (tmp_path / "health").write_text("OK")  # what the driver's stand-in server answers
    with LoopbackCluster(cpus_per_node=1, hide=(REPO, local)) as cluster:
        env = {**cluster.env, "YTMT_VGG19_PATH": "/models/vgg19-dcbb9e9d.pth",
               "PYTHONPATH": str(REPO)}
        res = subprocess.run([sys.executable, str(script), cluster.gcs_address, str(shared),
                              str(local)], env=env, cwd=tmp_path, capture_output=True,
                             text=True, timeout=300)
        groups = list(cluster.groups)
    cluster.groups = groups
    assert cluster.alive_processes() == []
    line = next((x for x in res.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line is not None, res.stdout[-3000:] + res.stderr[-3000:]
    out = json.loads(line[len("RESULT "):])
    assert out["nodes"] == 2
    # on the node that cannot see the repository, ytmt comes from the shipped package
    assert sorted(s["repo_visible"] for s in out["seen"]) == [False, True]
    remote = next(s for s in out["seen"] if not s["repo_visible"])
    assert not remote["ytmt"].startswith(str(REPO)), remote
    assert remote["vgg"] == "/models/vgg19-dcbb9e9d.pth"  # forwarded from the driver
    assert out["shared"] == "ok"
    assert out["local"].startswith(f"train.storage_path = {local}: node ")
    assert "not found" in out["local"] or "different folder" in out["local"]
    assert "\n" not in out["local"]
    assert out["markers_left"] == []  # the probe's marker files are removed
    # a SQLite store the worker node cannot see is refused with the fix; a server on
    # 127.0.0.1 that every node of this one-machine cluster reaches passes, and is refused
    # once it stops answering
    assert out["sqlite"].startswith(f"train.tracking_uri / MLFLOW_TRACKING_URI = sqlite:///"
                                    f"{local}/mlflow.db: node "), out["sqlite"]
    assert "mlflow server" in out["sqlite"]
    assert out["loopback_server"] == "ok"
    assert "no answer from http://127.0.0.1:" in out["stopped_server"]


# --------------------------------------------------------------------------- node loss

def test_min_workers_makes_the_worker_group_elastic():
    from ytmt.train.config import TrainConfig
    from ytmt.train.trainer import scaling_config

    assert scaling_config(TrainConfig(num_workers=16)).num_workers == 16
    elastic = scaling_config(TrainConfig(num_workers=16, min_workers=8))
    assert elastic.num_workers == (8, 16) and elastic.elasticity_enabled
    assert scaling_config(TrainConfig(num_workers=4, min_workers=4)).num_workers == 4
    for bad in (0, 17):
        with pytest.raises(ConfigError, match=rf"min_workers = {bad}: must be between 1 and "
                                              r"num_workers \(16\)"):
            TrainConfig(num_workers=16, min_workers=bad).validate()


# --------------------------------------------------------------------------- Ray jobs

def test_a_ray_job_must_name_its_storage(monkeypatch, tmp_path):
    from ytmt.ray_local import resolve_storage

    monkeypatch.delenv("YTMT_RAY_STORAGE", raising=False)
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", '{"runtime_env": {}}')
    with pytest.raises(ClusterSetupError, match=r"^train.storage_path is not set inside a Ray "
                                                r"job: .*YTMT_RAY_STORAGE"):
        resolve_storage(None, "YTMT_RAY_STORAGE", "outputs/ray_results", tmp_path,
                        setting="train.storage_path")
    assert resolve_storage("s3://b/ray?endpoint_override=http://h:9000", "YTMT_RAY_STORAGE",
                           "outputs/ray_results") == "s3://b/ray?endpoint_override=http://h:9000"
    monkeypatch.setenv("YTMT_RAY_STORAGE", str(tmp_path / "shared"))
    assert resolve_storage(None, "YTMT_RAY_STORAGE", "x") == str(tmp_path / "shared")
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR")
    monkeypatch.delenv("YTMT_RAY_STORAGE")
    assert resolve_storage(None, "YTMT_RAY_STORAGE", "outputs/ray_results", tmp_path) == str(
        tmp_path / "outputs/ray_results")  # outside a job the default is fine
