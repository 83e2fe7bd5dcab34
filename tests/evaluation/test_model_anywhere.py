"""A registered model pulled on a machine that has only the MLflow URI: a real MLflow server
on 127.0.0.1 with proxied artifacts (``--serve-artifacts``), and a process in its own mount
namespace where the repository (with the editable ``ytmt``) and the server's store are hidden
and no environment variable but MLFLOW_TRACKING_URI, PATH and HOME is set. It pulls
``models:/ytmt-anywhere@champion``, separates a photo, and `mlflow models serve` answers."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest

from ytmt.ray_local import free_port
from ytmt.serving import log_model

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{url} did not answer:\n{log.read_text()[-3000:]}")
            time.sleep(1)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM then SIGKILL the process group we started."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=15)
            return
        except subprocess.TimeoutExpired:
            continue


def _isolated(script: str, hide: list[Path], scratch: Path, env: dict[str, str]) -> list[str]:
    """``sh -c script`` in a mount namespace where each of ``hide`` is an empty folder (the
    venv, which lives in the repo, bound back) and the working directory is ``scratch``."""
    empty, stash = scratch / "empty", scratch / "venv-stash"
    empty.mkdir(exist_ok=True)
    stash.mkdir(exist_ok=True)
    q = shlex.quote
    lines = ["set -e", "mount --make-rprivate /", f"mount --bind {q(str(VENV))} {q(str(stash))}"]
    lines += [f"mount --bind {q(str(empty))} {q(str(h))}" for h in hide]
    lines += [f"mkdir -p {q(str(VENV))}", f"mount --bind {q(str(stash))} {q(str(VENV))}",
              f"cd {q(str(scratch))}", script]
    exports = " ".join(f"{k}={q(v)}" for k, v in env.items())
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            "\n".join(lines[:-1] + [f"exec env -i {exports} sh -c {q(script)}"])]


PULL = textwrap.dedent("""
    import base64, io, json, sys
    import mlflow, numpy as np, pandas as pd
    from PIL import Image
    try:
        import ytmt  # noqa: F401
        installed = True
    except ImportError:
        installed = False
    model = mlflow.pyfunc.load_model("models:/ytmt-anywhere@champion")
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(buf, "PNG")
    out = model.predict(pd.DataFrame({"image": [base64.b64encode(buf.getvalue()).decode()]}))
    t = Image.open(io.BytesIO(base64.b64decode(out["transmission"][0])))
    import ytmt
    print("RESULT " + json.dumps({"installed_before": installed, "size": list(t.size),
                                  "ytmt_from": ytmt.__file__}))
""")


def test_registered_model_is_pulled_and_served_where_only_the_uri_is_known(
        tmp_path, tiny_checkpoint):
    store = tmp_path / "server"
    store.mkdir()
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    log = tmp_path / "mlflow-server.log"
    server = subprocess.Popen(
        [str(VENV / "bin" / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
         "--artifacts-destination", str(store / "artifacts"), "--serve-artifacts",
         "--workers", "1"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ['PATH']}"})
    from mlflow.tracking._model_registry import utils as registry_state

    # MLflow's tracking and registry URIs are process-global: set both to this server (an
    # earlier in-process test may have pinned the registry elsewhere) and put both back
    previous = mlflow.get_tracking_uri(), registry_state._registry_uri
    try:
        _wait_http(f"{uri}/health", server, log)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        exp = mlflow.create_experiment("anywhere")
        with mlflow.start_run(experiment_id=exp):
            info = log_model(tiny_checkpoint, name="model",
                             registered_model_name="ytmt-anywhere")
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        version = client.search_model_versions("name='ytmt-anywhere'")[0].version
        client.set_registered_model_alias("ytmt-anywhere", "champion", version)
        assert info.model_uri

        scratch = tmp_path / "elsewhere"
        scratch.mkdir()
        (scratch / "pull.py").write_text(PULL)
        env = {"PATH": f"{VENV / 'bin'}:/usr/bin:/bin", "HOME": str(scratch),
               "MLFLOW_TRACKING_URI": uri}
        pulled = subprocess.run(
            _isolated("python pull.py", [REPO, store], scratch, env),
            capture_output=True, text=True, timeout=300)
        line = next((x for x in pulled.stdout.splitlines() if x.startswith("RESULT ")), None)
        assert line is not None, pulled.stdout[-3000:] + pulled.stderr[-3000:]
        result = json.loads(line[len("RESULT "):])
        assert result["installed_before"] is False  # the repo's ytmt is out of reach there
        assert not result["ytmt_from"].startswith(str(REPO))  # the model's own copy
        assert result["size"] == [56, 40]

        serve_port = free_port()
        serve = (f"mlflow models serve -m models:/ytmt-anywhere@champion --env-manager local "
                 f"-h 127.0.0.1 -p {serve_port} >serve.log 2>&1 & pid=$!; "
                 f"for i in $(seq 120); do sleep 1; python -c \"import urllib.request as u; "
                 f"u.urlopen('http://127.0.0.1:{serve_port}/ping', timeout=2)\" 2>/dev/null "
                 f"&& break; done; python -c \"import urllib.request as u, json, base64, io, "
                 f"numpy as np; from PIL import Image; b = io.BytesIO(); "
                 f"Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(b, 'PNG'); "
                 f"r = u.Request('http://127.0.0.1:{serve_port}/invocations', "
                 f"json.dumps({{'dataframe_records': [{{'image': "
                 f"base64.b64encode(b.getvalue()).decode()}}]}}).encode(), "
                 f"{{'Content-Type': 'application/json'}}); "
                 f"print('ANSWER', "
                 f"sorted(json.load(u.urlopen(r, timeout=60))['predictions'][0]))\"; "
                 f"status=$?; kill -TERM -- -$pid 2>/dev/null || kill $pid; exit $status")
        served = subprocess.run(["setsid", *_isolated(serve, [REPO, store], scratch, env)],
                                capture_output=True, text=True, timeout=300)
        assert "ANSWER ['reflection', 'transmission']" in served.stdout, (
            served.stdout[-2000:] + served.stderr[-2000:]
            + (scratch / "serve.log").read_text()[-3000:])
    finally:
        mlflow.set_tracking_uri(previous[0])
        registry_state._registry_uri = previous[1]
        _stop(server)
