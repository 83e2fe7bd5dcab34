"""Train the runs of the matrix side by side: each run's own DVC stage, several at once.

``dvc repro`` (DVC 3.67) runs a pipeline's stages one after another and has no ``--jobs``;
DVC's documented way to run independent stages at the same time is one ``dvc repro
<target>`` per target. It releases the repository lock while a stage's command runs and takes
it back to record the stage, so several ``dvc --wait-for-lock repro --single-item <stage>``
processes train at once in one workspace and DVC records each stage itself: ``dvc.lock``, the
cache, the models, metrics and plots are what the serial ``dvc repro`` writes, and each run is
its own MLflow run as before. ::

    python -m ytmt.train.matrix --jobs 4   # what the runs read, then train@*/train2@*, 4 at once
    dvc repro                              # evaluate and register (the runs are up to date)

Order: a stage starts once every matrix stage whose outputs it reads has finished (a
two-stage ``train2@run<i>-<k>`` waits for the ``train@<stage1>-<k>`` of its seed); these
edges come from DVC's own view of the stages' deps and outs. Before any run, the
non-matrix stages the runs read (``synthesize``, ``tune``) are reproduced once, and the MLflow
store and experiment are created once (concurrent first writers would race on them). A
failed stage: the stages that need it are not started, the others finish, and the exit
status is 1 with their names.

Where the runs train: every stage's trainer calls :func:`ytmt.ray_local.init_ray`, which
joins ``$RAY_ADDRESS``. With it exported (a cluster's head, and its ``$RAY_AUTH_TOKEN`` or
token file) all runs join that cluster; without it (and with ``train.num_workers`` > 0) this
command starts one local Ray on loopback (:func:`local_ray`) and hands its address to every
run, so the runs share one scheduler: on one machine with GPUs, separate local Rays would
each hand out the same GPUs. Either way Ray places the runs' worker groups side by side;
size ``--jobs`` so that ``jobs × train.num_workers × train.cpus_per_worker`` (and GPUs) fit:
a worker group that does not fit waits until one before it finishes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

#: stage names (before ``@``) of the training matrix in dvc.yaml
MATRIX_STAGES = ("train", "train2")


@dataclass(frozen=True)
class Plan:
    """The matrix stages in dvc.yaml order, each with the matrix stages it waits for, and the
    other stages whose outputs they read (reproduced first)."""

    needs: dict[str, frozenset[str]]
    upstream: tuple[str, ...]


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def plan_matrix(root: str | Path, matrix: tuple[str, ...] = MATRIX_STAGES) -> Plan:
    """The :class:`Plan` of the DVC project at ``root``, from DVC's resolved stages: B needs
    A when one of B's deps is (or lies under) one of A's outs."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        stages = list(repo.index.stages)
        outs = {s.name: [str(o.fs_path) for o in s.outs] for s in stages}
        deps = {s.name: [str(d.fs_path) for d in s.deps] for s in stages}
    names = [s.name for s in stages]
    chosen = [n for n in names if n.split("@")[0] in matrix]

    def feeders(name: str, among: list[str]) -> set[str]:
        return {a for a in among if a != name and any(
            _under(d, o) for d in deps[name] for o in outs[a])}

    others = [n for n in names if n not in chosen]
    upstream = sorted(set().union(*(feeders(n, others) for n in chosen)) if chosen else set())
    return Plan({n: frozenset(feeders(n, chosen)) for n in chosen}, tuple(upstream))


def run_jobs(commands: Mapping[str, list[str]], needs: Mapping[str, frozenset[str]],
             jobs: int, env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
             poll_s: float = 0.5, log: Callable[[str], None] = print) -> dict[str, int]:
    """Run ``commands`` (name → argv), at most ``jobs`` at once, each after every name it
    ``needs`` exited 0, in the order given when several are ready. Returns name → exit
    status; one whose needs failed is never started (status -1)."""
    if jobs < 1:
        raise ValueError(f"jobs = {jobs}: expected >= 1")
    status: dict[str, int] = {}
    running: dict[str, subprocess.Popen] = {}
    waiting = list(commands)
    while waiting or running:
        for name in list(waiting):
            if any(status.get(n, 0) != 0 for n in needs.get(name, ())):
                waiting.remove(name)
                status[name] = -1
                log(f"matrix: {name} not started: {', '.join(sorted(needs[name]))} failed")
            elif len(running) < jobs and all(status.get(n) == 0 for n in needs.get(name, ())):
                waiting.remove(name)
                log(f"matrix: start {name}")
                running[name] = subprocess.Popen(commands[name], env=env, cwd=cwd)
        time.sleep(poll_s)
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                status[name] = proc.returncode
                del running[name]
                log(f"matrix: {name} {'done' if proc.returncode == 0 else 'FAILED'}")
    return status


def _prepare_tracking(root: Path, train) -> None:
    """Create the MLflow store and the training experiment once, before concurrent runs."""
    from ytmt.tracking import check_tracking_uri, get_or_create_experiment, resolve_tracking_uri

    uri = resolve_tracking_uri(train.tracking_uri, cwd=root)
    check_tracking_uri(uri)
    get_or_create_experiment(uri, train.experiment)


_HEAD = """
import time, ray
ray.init(address="local", num_cpus={cpus}, _node_ip_address="127.0.0.1",
         include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port={dashboard})
print("ready", flush=True)
time.sleep(1e9)
"""


@contextlib.contextmanager
def local_ray(cpus: int | None = None, tries: int = 3) -> Iterator[dict[str, str]]:
    """A local Ray of ``cpus`` CPUs (None: all) on loopback that other drivers join; yields
    the environment that joins it (``RAY_ADDRESS``, and the token of Ray's token
    authentication: ``$RAY_AUTH_TOKEN`` if set, else a new one). It runs in a process of its
    own, in a new session, stopped by its process group at the end (never ``ray stop``,
    which stops every Ray of the user). Its GCS port is chosen up front and every process it
    starts has it in ``$RAY_ADDRESS``, so Ray Train's placement-group cleaner asks this Ray
    and not another one on the machine (the trap :mod:`ytmt.ray_local` describes). On a
    machine loaded enough that a node does not come up in Ray's time limits (seen here at a
    load of 28 on 2 cores: the raylet gave up waiting for its agents), it tries ``tries``
    times."""
    for attempt in range(1, tries + 1):
        proc, joins = _start_head(cpus)
        if proc.stdout is not None and proc.stdout.readline().strip() == "ready":
            break
        _stop_group(proc)
        if attempt == tries:
            raise RuntimeError(f"the local Ray did not start in {tries} tries")
        print(f"matrix: the local Ray did not start (try {attempt} of {tries})", flush=True)
    try:
        yield joins
    finally:
        _stop_group(proc)


def _start_head(cpus: int | None) -> tuple[subprocess.Popen, dict[str, str]]:
    """The process of :func:`local_ray` (it prints ``ready`` once Ray is up) and the
    environment that joins its Ray."""
    import secrets

    from ytmt.ray_local import free_port

    port = free_port()
    joins = {"RAY_ADDRESS": f"127.0.0.1:{port}", "RAY_AUTH_MODE": "token",
             "RAY_AUTH_TOKEN": os.environ.get("RAY_AUTH_TOKEN") or secrets.token_hex(32)}
    # a loaded machine registers the node slowly: Ray's 60 s default timed out here
    env = {**os.environ, **joins, "RAY_GCS_SERVER_PORT": str(port),
           "RAY_raylet_start_wait_time_s": os.environ.get("RAY_raylet_start_wait_time_s",
                                                          "300")}
    head = _HEAD.format(cpus=cpus, dashboard=free_port())
    proc = subprocess.Popen([sys.executable, "-c", head], env=env, stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    return proc, joins


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, the process group of ``proc`` (a session leader)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        if sig == signal.SIGTERM:
            time.sleep(3)
    proc.wait()


def run_matrix(root: str | Path = ".", jobs: int = 1, params_file: str = "params.yaml",
               stages: list[str] | None = None) -> dict[str, int]:
    """Reproduce the plan's upstream stages, then its matrix stages (``stages``: only these
    and what they need of the matrix), ``jobs`` at once. Returns stage → exit status."""
    root = Path(root).resolve()
    plan = plan_matrix(root)
    wanted = _with_needs(stages, plan.needs) if stages else list(plan.needs)
    dvc = [sys.executable, "-m", "dvc", "--wait-for-lock", "repro"]
    # the stages call `python`: this interpreter's environment
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}"
                                 f"{os.environ.get('PATH', '')}"}
    if plan.upstream:
        subprocess.run([*dvc, *plan.upstream], env=env, cwd=root, check=True)
    from ytmt.params import load_params

    train = load_params(root / params_file).train
    _prepare_tracking(root, train)
    commands = {name: [*dvc, "--single-item", name] for name in wanted}
    if env.get("RAY_ADDRESS") or train.num_workers == 0:
        return run_jobs(commands, plan.needs, jobs, env=env, cwd=root)
    with local_ray() as joins:
        print(f"matrix: one local Ray at {joins['RAY_ADDRESS']} for every run", flush=True)
        return run_jobs(commands, plan.needs, jobs, env={**env, **joins}, cwd=root)


def _with_needs(stages: list[str], needs: Mapping[str, frozenset[str]]) -> list[str]:
    unknown = [s for s in stages if s not in needs]
    if unknown:
        raise SystemExit(f"matrix: {', '.join(unknown)}: not a stage of the training matrix "
                         f"({', '.join(needs) or 'none'})")
    chosen, todo = set(), list(stages)
    while todo:
        name = todo.pop()
        if name not in chosen:
            chosen.add(name)
            todo += needs[name]
    return [n for n in needs if n in chosen]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", "-j", type=int, default=1,
                    help="runs at once (default 1: one after the other, like dvc repro)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("stages", nargs="*", help="only these matrix stages (and their stage 1)")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error(f"--jobs {args.jobs}: expected >= 1")
    status = run_matrix(".", args.jobs, args.params, args.stages or None)
    failed = sorted(name for name, code in status.items() if code != 0)
    if failed:
        print(f"matrix: failed or not started: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"matrix: {len(status)} stage(s) up to date")
    return 0


if __name__ == "__main__":
    from ytmt.params import run_stage

    sys.exit(run_stage(main))
