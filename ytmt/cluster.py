"""What a multi-node Ray cluster needs that one machine does not: shipped code and
environment, storage URIs that keep their query, and guards that refuse node-local settings.

On one machine every path, SQLite file and environment variable the driver sees is also
what the workers see. On a cluster whose nodes share nothing but object storage and an
MLflow server, each of those is a way to fail late (an ImportError on a remote node, a
second SQLite database there, a checkpoint folder nobody else can read) or, worse, to give
wrong results silently (stale code, random VGG weights). This module turns them into one
line each, before Ray starts any worker:

- :func:`worker_runtime_env`: what a driver that joins a cluster hands to every worker: the
  ``ytmt`` package itself (``py_modules``) and the environment variables of
  :data:`FORWARDED_ENV` that are set on the driver.
- :func:`uri_join`: ``s3://bucket/prefix?endpoint_override=http://host:9000`` joined with a
  name keeps the query at the end, where pyarrow and Ray read it.
- :func:`check_cluster`: on a cluster of more than one node, refuse a tracking store (a
  SQLite or file store's folder, a server's ``/health``), a storage path or a shard set that
  not every node reaches as the driver does, checked *from each node* by a task pinned to
  it (a SQLite file or a loopback server is refused exactly where another node cannot reach
  it), and fractional GPUs per worker. On a single node it checks nothing.
"""

from __future__ import annotations

import functools
import os
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ytmt.config import ConfigError

# Environment variables a worker on another node needs from the driver, when they are set:
# the VGG-19 file, the MLflow server and its credentials, the object store's credentials
# and endpoint, and the project's storage defaults.
FORWARDED_ENV = (
    "YTMT_VGG19_PATH", "YTMT_RAY_STORAGE", "YTMT_TUNE_STORAGE",
    "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_S3_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
    "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
)

MARKER_PREFIX = ".ytmt-shared-check-"


class ClusterSetupError(ConfigError):
    """A setting that works on one machine but not on a cluster of several nodes."""


# --------------------------------------------------------------------------- URIs

def is_uri(path: str | os.PathLike) -> bool:
    """True for ``scheme://...`` (``s3://``, ``gs://``, ``file://``), False for a path."""
    return "://" in str(path)


@functools.lru_cache(maxsize=256)
def filesystem(path: str) -> tuple[Any, str]:
    """pyarrow's filesystem and the path inside it for ``path``, a URI (``s3://...``, its
    query read by pyarrow) or a local path; cached, so one S3 client serves each location."""
    import pyarrow.fs as pafs

    return pafs.FileSystem.from_uri(path if is_uri(path) else Path(path).resolve().as_uri())


def uri_join(base: str, *names: str) -> str:
    """``base`` with ``names`` appended as path segments. A URI's query (``?endpoint_override
    =...``) stays at the end: ``uri_join("s3://b/p?endpoint_override=http://h:9000", "run")``
    is ``s3://b/p/run?endpoint_override=http://h:9000``. Plain paths join as paths."""
    names = tuple(n.strip("/") for n in names if n)
    if not is_uri(base):
        return str(Path(base, *names))
    parts = urlsplit(base)
    path = "/".join([parts.path.rstrip("/"), *names])
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def uri_with_suffix(base: str, suffix: str) -> str:
    """``base`` with ``suffix`` appended to its last path segment, query kept at the end
    (``.../sweep-x`` + ``_asha.pkl``)."""
    if not is_uri(base):
        return f"{base}{suffix}"
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + suffix,
                       parts.query, parts.fragment))


# --------------------------------------------------------------------------- runtime env

def package_dir() -> Path:
    """The folder of the ``ytmt`` package this driver imports (what workers must import)."""
    import ytmt

    return Path(ytmt.__file__).resolve().parent


def forwarded_env(names: tuple[str, ...] = FORWARDED_ENV) -> dict[str, str]:
    """The variables of ``names`` that are set on this driver."""
    return {k: os.environ[k] for k in names if os.environ.get(k)}


def worker_runtime_env(extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """The ``runtime_env`` of a driver that joins a cluster: this driver's ``ytmt`` package
    (uploaded once and put first on every worker's ``sys.path``, so remote nodes never import
    another version) and the set variables of :data:`FORWARDED_ENV` plus ``extra_env``."""
    return {"py_modules": [str(package_dir())],
            "env_vars": {**forwarded_env(), **(extra_env or {})}}


# --------------------------------------------------------------------------- guards

def alive_nodes() -> list[dict[str, Any]]:
    """The alive nodes of the Ray this process is connected to."""
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


TRACKING_SETTING = "train.tracking_uri / MLFLOW_TRACKING_URI"
TRACKING_FIX = ("start `mlflow server --host 0.0.0.0 --serve-artifacts ...` on a host every node "
                "reaches and set MLFLOW_TRACKING_URI=http://<that host>:<port> (docs/cluster.md)")
STORAGE_FIX = ("use object storage (s3://bucket/prefix) or a POSIX path mounted on every node "
               "(docs/cluster.md)")


def tracking_target(uri: str) -> str | None:
    """What each node must reach for the tracking URI ``uri`` to be the same store there:
    a SQLite or file store's folder, a server's ``/health`` URL (None: a database server,
    e.g. ``postgresql://``, which is not probed)."""
    parts = urlsplit(uri)
    if parts.scheme == "sqlite":
        return str(Path(uri[len("sqlite:///"):]).parent)
    if parts.scheme == "file":
        return parts.path
    if parts.scheme == "":
        return str(Path(uri).resolve())
    if parts.scheme in ("http", "https"):
        return uri.rstrip("/") + "/health"
    return None


def _probe(path: str, token: str | None) -> str:
    """Run on one node: what that node sees at ``path`` ("ok" or why not): an http(s) URL
    must answer, a URI must open, a folder must hold the driver's marker file ``token``."""
    if path.startswith(("http://", "https://")):
        import urllib.request

        try:
            with urllib.request.urlopen(path, timeout=10) as resp:  # noqa: S310
                resp.read(64)
        except OSError as err:
            return f"no answer from {path} ({err})"
        return "ok"
    if is_uri(path):
        import pyarrow.fs as pafs

        try:
            fs, inner = filesystem(path)
            info = fs.get_file_info(inner)
        except Exception as err:  # noqa: BLE001 (any failure is the answer, sent back as text)
            return f"cannot open ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
        return "ok" if info.type != pafs.FileType.NotFound else "not found"
    p = Path(path)
    if not p.exists():
        return "not found"
    if token is not None and not (p / f"{MARKER_PREFIX}{token}").is_file():
        return "a different folder (the driver's marker file is not there)"
    return "ok"


def _make_uri_dir(path: str) -> None:
    """Create ``path``'s directory in its object store if it is missing (the driver's
    credentials); an error is left for the nodes' probe to report."""
    import pyarrow.fs as pafs

    try:
        fs, inner = filesystem(path)
        if fs.get_file_info(inner).type == pafs.FileType.NotFound:
            fs.create_dir(inner, recursive=True)
    except Exception:  # noqa: BLE001 (the per-node probe names the failure)
        pass


def check_paths_on_nodes(paths: dict[str, str], nodes: list[dict[str, Any]],
                         fixes: dict[str, str] | None = None,
                         shown: dict[str, str] | None = None) -> None:
    """ClusterSetupError unless every node sees each of ``paths`` (setting name -> path or
    URI) as the driver does: a local folder (made here if missing: the run would make it)
    must be the *same* folder (a marker file the
    driver writes there is visible), a URI must open. Checked by a zero-CPU task pinned to
    each node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    markers: dict[str, tuple[Path, str]] = {}
    try:
        for key, path in paths.items():
            if path.startswith(("http://", "https://")):
                continue
            if is_uri(path):  # a prefix the run would create (an empty bucket's storage)
                _make_uri_dir(path)
                continue
            Path(path).mkdir(parents=True, exist_ok=True)  # storage the run would create
            token = secrets.token_hex(8)
            marker = Path(path) / f"{MARKER_PREFIX}{token}"
            marker.write_text("ytmt: written by the driver to check that every node sees "
                              "this folder; safe to delete\n")
            markers[key] = (marker, token)
        probe = ray.remote(num_cpus=0)(_probe)
        pending = {}
        for node in nodes:
            strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            for key, path in paths.items():
                token = markers[key][1] if key in markers else None
                ref = probe.options(scheduling_strategy=strategy).remote(path, token)
                pending[(node["NodeID"], key)] = ref
        for (node_id, key), ref in pending.items():
            answer = ray.get(ref, timeout=120)
            if answer != "ok":
                fix = (fixes or {}).get(key, STORAGE_FIX)
                raise ClusterSetupError(
                    f"{key} = {(shown or {}).get(key, paths[key])}: node {node_id[:12]} "
                    f"sees {answer}; on a cluster "
                    f"{fix}")
    finally:
        for marker, _ in markers.values():
            marker.unlink(missing_ok=True)


def check_cluster(*, tracking_uri: str | None = None, paths: dict[str, str] | None = None,
                  use_gpu: bool = False, gpus_per_worker: float = 1.0, num_workers: int = 1,
                  nodes: list[dict[str, Any]] | None = None) -> int:
    """Refuse, with one line naming the setting and the fix, what breaks on a cluster of
    more than one node (see the module docstring); returns the number of alive nodes.
    ``paths``: setting name -> path or URI the workers read or write (storage, shards);
    ``tracking_uri``: checked the same way (:func:`tracking_target`)."""
    nodes = alive_nodes() if nodes is None else nodes
    if len(nodes) <= 1:
        return len(nodes)
    if use_gpu and num_workers > 1 and gpus_per_worker != int(gpus_per_worker):
        raise ClusterSetupError(
            f"train.gpus_per_worker = {gpus_per_worker}: fractional GPUs let two NCCL ranks "
            f"share one GPU (\"Duplicate GPU detected\"); use 1 (or a whole number)")
    paths = dict(paths or {})
    target = tracking_target(tracking_uri) if tracking_uri else None
    if target is not None:
        paths[TRACKING_SETTING] = target
    if paths:
        check_paths_on_nodes(paths, nodes, {TRACKING_SETTING: TRACKING_FIX},
                             {TRACKING_SETTING: tracking_uri or ""})
    return len(nodes)
