"""A two-node Ray cluster on loopback for the tests: a head and a worker node, one CPU each,
both started with ``--node-ip-address=127.0.0.1`` and stopped by process group (never
``ray stop``, which would kill every Ray process of the user, other tests' included)."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ytmt.ray_local import free_port

VENV_BIN = Path(sys.executable).parent  # the venv's bin: ray, python


class LoopbackCluster:
    """``with LoopbackCluster() as cluster: cluster.ray("job", "submit", ...)``."""

    def __init__(self, cpus_per_node: int = 1, resources: dict[str, float] | None = None,
                 hide: tuple[Path, ...] = ()):
        """``hide``: folders the worker node must not see. With any, the worker node runs in
        its own mount namespace (``unshare -m``) where each is covered by an empty bind
        mount (the venv inside a hidden repo stays reachable: it is bound back), with its
        own working directory and none of this process's environment variables but PATH,
        HOME and Ray's token: a node that shares nothing with the driver but the network."""
        self.cpus = cpus_per_node
        self.resources = resources or {}
        self.hide = tuple(Path(h).resolve() for h in hide)
        self.temp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # unix socket paths are short
        self.port, self.dashboard_port = free_port(), free_port()
        self.env = {**os.environ, "RAY_AUTH_MODE": "token",
                    "RAY_AUTH_TOKEN": secrets.token_hex(32),
                    "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        for key in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH"):
            self.env.pop(key, None)
        self.groups: list[int] = []

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def ray(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run the ``ray`` CLI with the cluster's token."""
        return subprocess.run([str(VENV_BIN / "ray"), *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def _isolated(self, cmd: list[str]) -> tuple[list[str], dict[str, str]]:
        """``cmd`` wrapped to run in a mount namespace of its own (see ``__init__``)."""
        empty, stash, cwd = (self.temp / n for n in ("empty", "venv", "cwd"))
        for d in (empty, stash, cwd):
            d.mkdir(exist_ok=True)
        venv = VENV_BIN.parent.resolve()
        lines = ["set -e", "mount --make-rprivate /",
                 f"mount --bind {shlex.quote(str(venv))} {shlex.quote(str(stash))}"]
        for h in self.hide:
            lines.append(f"mount --bind {shlex.quote(str(empty))} {shlex.quote(str(h))}")
        lines += [f"mkdir -p {shlex.quote(str(venv))}",
                  f"mount --bind {shlex.quote(str(stash))} {shlex.quote(str(venv))}",
                  f"cd {shlex.quote(str(cwd))}", "exec " + shlex.join(cmd)]
        env = {k: self.env[k] for k in ("PATH", "HOME", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN")
               if k in self.env}
        return ["unshare", "-m", "--propagation", "private", "sh", "-c", "\n".join(lines)], env

    def _start(self, *args: str, isolated: bool = False) -> None:
        ports = ["--node-manager-port", "--object-manager-port", "--dashboard-agent-grpc-port",
                 "--dashboard-agent-listen-port", "--metrics-export-port",
                 "--runtime-env-agent-port"]
        cmd = [str(VENV_BIN / "ray"), "start", "--node-ip-address=127.0.0.1",
               f"--num-cpus={self.cpus}", "--num-gpus=0",
               f"--resources={json.dumps(self.resources)}",
               "--object-store-memory=100000000", "--disable-usage-stats",
               *(f"{p}={free_port()}" for p in ports), *args]
        # A new session: the node's daemons (gcs, raylet, dashboard, agents, workers) stay in
        # this process group, which is what stop() kills.
        env = self.env
        if isolated:
            cmd, env = self._isolated(cmd)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.groups.append(proc.pid)
        out, _ = proc.communicate(timeout=180)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{out}")

    def __enter__(self) -> LoopbackCluster:
        try:
            self._start("--head", f"--port={self.port}", "--include-dashboard=true",
                        "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
                        f"--ray-client-server-port={free_port()}", f"--temp-dir={self.temp}")
            # its own temp dir: two nodes sharing one would share runtime_resources/, and
            # the worker node would garbage-collect the job's working_dir under the head
            worker_temp = self.temp / "w"
            worker_temp.mkdir()
            self._start(f"--address={self.gcs_address}", f"--temp-dir={worker_temp}",
                        isolated=bool(self.hide))
            self.wait_for_nodes(2)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def node_ids(self) -> list[str]:
        """Ids of the alive nodes, from the state API (the dashboard)."""
        res = self.ray("list", "nodes", "--address", self.dashboard_url, "--format=json",
                       "--filter", "state=ALIVE")
        if res.returncode != 0:
            raise RuntimeError(res.stdout + res.stderr)
        return [n["node_id"] for n in json.loads(res.stdout)]

    def wait_for_nodes(self, n: int, timeout: float = 120) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                ids = self.node_ids()
                if len(ids) >= n:
                    return ids
            except (RuntimeError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {n} Ray nodes alive after {timeout} s")
            time.sleep(2)

    def stop(self) -> None:
        """SIGTERM then SIGKILL the process groups this cluster created, nothing else."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pgid in self.groups:
                try:
                    os.killpg(pgid, sig)
                except ProcessLookupError:
                    pass
            if sig == signal.SIGTERM:
                time.sleep(3)
        self.groups.clear()
        shutil.rmtree(self.temp, ignore_errors=True)

    def alive_processes(self) -> list[int]:
        """Pids still in this cluster's process groups (zombies excluded)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            state, pgid = fields[0], int(fields[2])
            if pgid in self.groups and state != "Z":
                pids.append(int(entry.name))
        return pids
