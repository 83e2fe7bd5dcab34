"""The local Ray the stages start lets Ray Train's placement-group cleaner see the run it
guards, also while another Ray runs on the machine (here: the test session's). Started the
plain way, the state API cannot tell which Ray to ask; the cleaner then logs a warning every
second or, worse, takes a live controller for dead and removes its workers' placement group
(seen in a `dvc repro` of the train stage)."""

import os
import subprocess
import sys
import textwrap

import pytest

ASK = textwrap.dedent("""
    import os
    import sys
    import ray
    from ray.util.state.exception import RayStateApiException
    from ytmt.ray_local import start_local_ray

    if sys.argv[1] == "plain":
        ray.init(num_cpus=1, _node_ip_address="127.0.0.1", include_dashboard=False)
    else:
        start_local_ray(1)

    @ray.remote(num_cpus=0)
    class Controller:
        def ping(self):
            return 1

    @ray.remote(num_cpus=0)
    def state_of(actor_id):  # what the cleaner does, from inside the cluster
        from ray.util.state import get_actor
        try:
            found = get_actor(actor_id, timeout=20)
        except (RayStateApiException, ConnectionError) as err:  # the state API's failures
            return f"unanswered {type(err).__name__}"
        return found.state if found else "not found"

    @ray.remote(num_cpus=0)
    def address_seen():  # the cluster a worker's state-API client asks first
        return os.environ.get("RAY_ADDRESS", "unset")

    controller = Controller.remote()
    ray.get(controller.ping.remote())
    print("STATE", ray.get(state_of.remote(controller._actor_id.hex())))
    print("ADDRESS", ray.get(address_seen.remote()))
    print("OWN", ray.get_runtime_context().gcs_address)
    ray.shutdown()
""")


def states_seen(*hows: str) -> list[dict[str, str]]:
    """For each Ray started ``how`` (the probes run at once, each its own Ray): STATE (the
    live actor's state as a worker's state API reports it, or why it did not answer),
    ADDRESS (the worker's $RAY_ADDRESS) and OWN (its Ray's GCS address); any other error
    fails here."""
    procs = [subprocess.Popen([sys.executable, "-c", ASK, how], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for how in hows]
    seens = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=180)
            seen = dict(line.split(" ", 1) for line in out.splitlines()
                        if line.split(" ", 1)[0] in ("STATE", "ADDRESS", "OWN"))
            assert proc.returncode == 0 and len(seen) == 3, err[-3000:]
            seens.append(seen)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return seens


def gcs_port(address: str) -> str:
    """The port of a GCS address (Ray may report the host's own IP for 127.0.0.1)."""
    return address.rsplit(":", 1)[-1]


@pytest.mark.slow
def test_state_api_finds_the_run_while_another_ray_runs(ray_local):
    assert ray_local.is_initialized()  # the other Ray on this machine
    local, plain = states_seen("local", "plain")
    # the workers' state-API client asks their own Ray, and it answers: the actor is alive
    assert gcs_port(local["ADDRESS"]) == gcs_port(local["OWN"]) and local["STATE"] == "ALIVE"
    # control: the plain start does not point the workers at their Ray, so the address
    # check above can fail; its state query ends in one of the known outcomes (a
    # crash of the probe itself would fail in states_seen)
    assert gcs_port(plain["ADDRESS"]) != gcs_port(plain["OWN"])
    assert plain["STATE"] in ("ALIVE", "not found", "DEAD") or \
        plain["STATE"].startswith("unanswered ")


INIT = textwrap.dedent("""
    import os
    import sys
    import ray
    from ytmt.ray_local import init_ray

    address = sys.argv[1] if len(sys.argv) > 1 else None
    print("STARTED", init_ray(address, num_cpus=1, resources={"train_driver": 2.0}))
    print("AGAIN", init_ray(address, num_cpus=1))
    print("RESOURCES", sorted((k, v) for k, v in ray.cluster_resources().items()
                              if k in ("CPU", "train_driver")))
    print("POLL", ray.get(ray.remote(num_cpus=0)(
        lambda: os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "unset")).remote()))
    ray.shutdown()
""")


def init_in_subprocess(*args: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-c", INIT, *args], capture_output=True, text=True,
                          timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(line.split(" ", 1) for line in proc.stdout.splitlines()
                if line.split(" ", 1)[0] in ("STARTED", "AGAIN", "RESOURCES", "POLL"))


@pytest.mark.slow
def test_init_ray_starts_a_local_ray_or_joins_one_and_says_which(ray_local):
    # no address: a local Ray with the custom resource; a second call leaves it alone
    # and the workers poll every 0.5 s (ytmt.ray_local.LOCAL_HEALTH_CHECK_S)
    local = init_in_subprocess()
    assert local == {"STARTED": "True", "AGAIN": "False",
                     "RESOURCES": "[('CPU', 1.0), ('train_driver', 2.0)]", "POLL": "0.5"}
    # an address: join that Ray (the session's, 2 CPUs); the local-only settings do not
    # apply, and the cluster's workers keep the poll interval the cluster was given (the
    # session's Ray is local, and the test process does not set the variable)
    joined = init_in_subprocess(ray_local.get_runtime_context().gcs_address)
    assert joined == {"STARTED": "True", "AGAIN": "False", "RESOURCES": "[('CPU', 2.0)]",
                      "POLL": os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "unset")}
    assert ray_local.is_initialized() and ray_local.cluster_resources()["CPU"] == 2.0


def test_storage_paths_resolve_explicit_then_env_then_default(tmp_path, monkeypatch):
    from ytmt.ray_local import resolve_storage

    monkeypatch.delenv("YTMT_X_STORAGE", raising=False)
    assert resolve_storage(None, "YTMT_X_STORAGE", "outputs/x", tmp_path) == \
        str(tmp_path / "outputs" / "x")
    monkeypatch.setenv("YTMT_X_STORAGE", "env/dir")
    assert resolve_storage(None, "YTMT_X_STORAGE", "outputs/x", tmp_path) == \
        str(tmp_path / "env" / "dir")
    assert resolve_storage("/abs/runs", "YTMT_X_STORAGE", "outputs/x", tmp_path) == "/abs/runs"
    assert resolve_storage("s3://bucket/runs", "YTMT_X_STORAGE", "x", tmp_path) == \
        "s3://bucket/runs"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_storage("~/runs", "YTMT_X_STORAGE", "x", "/elsewhere") == \
        str(tmp_path / "runs")
