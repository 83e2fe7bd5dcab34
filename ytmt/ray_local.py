"""Ray plumbing shared by training, sweeps and synthesis: start or join Ray, storage paths.

:func:`init_ray` is the one way the library starts or joins Ray: it joins a cluster
(an explicit address, ``$RAY_ADDRESS`` as ``ray job submit`` sets it, or ``"auto"``) or
starts a local Ray on 127.0.0.1 (:func:`start_local_ray`) that Ray Train's placement-group
cleaner can see. :func:`resolve_storage` says where Ray Train and Ray Tune keep their runs.

Why the local Ray is started the way it is: Ray Train 2.60 starts a detached
``PlacementGroupCleaner`` with every run: it polls the state API for the run's controller
actor and removes the run's placement group (killing its workers) when the controller looks
dead. Two things make it misjudge a live run:

- without the dashboard the state API has no server: every poll fails and logs a warning
  ("Failed to query Ray Train Controller actor state"), hundreds per training;
- the cleaner's state-API client finds its cluster from ``$RAY_ADDRESS``, else by scanning
  the machine for GCS processes. With another Ray running here (a second pipeline, a test
  session, a cluster) it may ask the other Ray, which has no such actor: "dead", and a live
  training loses its workers mid-epoch (seen here: a restart from the last checkpoint).

So a local Ray is started with the dashboard (on 127.0.0.1, a free port) and a GCS port
chosen up front, which every worker gets in ``$RAY_ADDRESS``.

It is also quiet: Ray's notice that token authentication is on by default (it stays on) is
not printed, Ray's own driver logging
is at WARNING, worker lines reach the console without Ray's ``(pid=...)`` prefix, and the
preemption watcher (for cloud spot nodes, which a local Ray has none of) is off, and every
worker runs :func:`quiet_worker_logs` first (``worker_process_setup_hook``): the placement-
group cleaner's notice that it cleaned up after a Train run whose controller ended (what
every trial Ray Tune's scheduler stops early does) is not printed. Everything else Ray logs
still lands in its session folder (``/tmp/ray/session_latest/logs``).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Loggers of Ray internals whose warnings describe normal operation, silenced in workers.
QUIET_WORKER_LOGGERS = (
    # "Detected that the Ray Train controller actor (...) is dead. Cleaning up placement
    # group ...": a trial stopped by the scheduler, its workers freed as they should be
    "ray.train.v2._internal.execution.controller.placement_group_cleaner",
)


def quiet_worker_logs() -> None:
    """Ray worker set-up hook: :data:`QUIET_WORKER_LOGGERS` log errors only."""
    import logging

    for name in QUIET_WORKER_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


#: Ray Train's controller polls its workers (their reports, their end) every
#: ``$RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` (2 s by default). A local Ray polls every 0.5 s
#: unless that variable is set: a run's end is seen sooner, and a run of one report took
#: 11.6 s against 14.5-16.1 s (a no-op TorchTrainer on this 2-core machine). A cluster keeps
#: its own setting.
HEALTH_CHECK_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
LOCAL_HEALTH_CHECK_S = "0.5"


def start_local_ray(num_cpus: int | None = None, resources: dict[str, float] | None = None,
                    **init_kwargs: Any) -> None:
    """``ray.init`` a new local Ray (loopback only) as the module docstring explains;
    ``init_kwargs`` go to ``ray.init`` (e.g. ``log_to_driver``)."""
    import logging

    import ray

    gcs_port = free_port()
    previous = os.environ.get("RAY_GCS_SERVER_PORT")
    os.environ["RAY_GCS_SERVER_PORT"] = str(gcs_port)
    # Ray announces, at WARNING, that token authentication is on by default: it stays on
    notice = logging.getLogger("ray._private.authentication.authentication_token_setup")
    level = notice.level
    notice.setLevel(logging.ERROR)
    env = {"RAY_ADDRESS": f"127.0.0.1:{gcs_port}", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
           HEALTH_CHECK_ENV: os.environ.get(HEALTH_CHECK_ENV, LOCAL_HEALTH_CHECK_S)}
    init_kwargs.setdefault("logging_level", logging.WARNING)
    init_kwargs.setdefault("logging_config", ray.LoggingConfig(encoding="TEXT",
                                                               log_level="WARNING"))
    try:
        ray.init(address="local", num_cpus=num_cpus, resources=resources,
                 _node_ip_address="127.0.0.1", include_dashboard=True,
                 dashboard_host="127.0.0.1", dashboard_port=free_port(),
                 runtime_env={"env_vars": env,
                              "worker_process_setup_hook": f"{__name__}.quiet_worker_logs"},
                 **init_kwargs)
    finally:
        notice.setLevel(level)
        if previous is None:
            os.environ.pop("RAY_GCS_SERVER_PORT", None)
        else:
            os.environ["RAY_GCS_SERVER_PORT"] = previous


def init_ray(address: str | None = None, *, num_cpus: int | None = None,
             resources: dict[str, float] | None = None, **init_kwargs: Any) -> bool:
    """Start or join Ray unless this process is connected already.

    ``address`` (else ``$RAY_ADDRESS``): join that cluster (``"auto"``: the one running on
    this machine). None (or ``"local"``): a new local Ray of ``num_cpus`` CPUs (None: all)
    with the custom ``resources`` (e.g. ``{"train_driver": 1.0}``), as the module docstring
    explains; both are ignored when joining (the cluster's nodes declare their own).
    ``init_kwargs`` go to ``ray.init`` (e.g. ``log_to_driver``). Joining a cluster ships
    the code and environment (:func:`ytmt.cluster.worker_runtime_env`) unless
    ``init_kwargs`` has a ``runtime_env``.

    Returns True when this call started or joined Ray: only then is the caller's
    ``ray.shutdown()`` its own to call (it disconnects from a cluster, stops a local Ray)."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address != "local":
        # workers on other nodes import this driver's ytmt and get its named environment
        # variables (ytmt.cluster.FORWARDED_ENV), never what happens to be installed there
        from ytmt.cluster import worker_runtime_env

        init_kwargs.setdefault("runtime_env", worker_runtime_env())
        ray.init(address=address, **init_kwargs)
    else:
        start_local_ray(num_cpus, resources, **init_kwargs)
    return True


def in_ray_job() -> bool:
    """True in the driver of a job submitted with ``ray job submit`` (its working directory
    is a temporary copy that goes away with the job)."""
    return bool(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"))


def resolve_storage(path: str | None, env: str, default: str,
                    cwd: str | Path | None = None, setting: str = "storage_path") -> str:
    """Where Ray Train or Ray Tune keep their runs: ``path`` > ``$<env>`` > ``<cwd>/<default>``.

    Local paths are made absolute (workers and trials run in other directories); URIs
    (``s3://bucket/prefix``) are kept as they are. Inside a submitted Ray job the default is
    refused (``setting`` names the key in the one-line error): it would lie in the job's
    temporary working directory, and running the job again would start over instead of
    resuming."""
    given = path or os.environ.get(env)
    if not given and in_ray_job():
        from ytmt.cluster import ClusterSetupError

        raise ClusterSetupError(
            f"{setting} is not set inside a Ray job: the default <cwd>/{default} is the job's "
            f"temporary folder, so a rerun would not resume; set {setting} (or ${env}) to "
            f"storage every node reaches (s3://bucket/prefix or a shared path)")
    path = given or default
    if "://" in path:
        return path
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (Path(cwd or os.getcwd()) / p).resolve())
