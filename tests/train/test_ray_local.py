"""The local Ray the stages start lets Ray Train's placement-group cleaner see the run it
guards, also while another Ray runs on the machine (here: the test session's). Started the
plain way, the state API cannot tell which Ray to ask; the cleaner then logs a warning every
second or, worse, takes a live controller for dead and removes its workers' placement group
(seen in a `dvc repro` of the train stage)."""

import subprocess
import sys
import textwrap

import pytest

ASK = textwrap.dedent("""
    import sys
    import ray
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
        except Exception as err:
            return f"error {type(err).__name__}"
        return found.state if found else "not found"

    controller = Controller.remote()
    ray.get(controller.ping.remote())
    print("STATE", ray.get(state_of.remote(controller._actor_id.hex())))
    ray.shutdown()
""")


def state_seen(how: str) -> str:
    proc = subprocess.run([sys.executable, "-c", ASK, how], capture_output=True, text=True,
                          timeout=180)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("STATE ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return lines[0].split(" ", 1)[1]


@pytest.mark.slow
def test_state_api_finds_the_run_while_another_ray_runs(ray_local):
    assert ray_local.is_initialized()  # the other Ray on this machine
    assert state_seen("local") == "ALIVE"
    # control: the plain start cannot find its own actor with another Ray running
    assert state_seen("plain") != "ALIVE"
