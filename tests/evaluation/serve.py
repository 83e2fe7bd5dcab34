"""`mlflow models serve` for tests: start it on 127.0.0.1, call it, stop what we started."""

import base64
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image


def b64_png(arr_u8):
    buf = io.BytesIO()
    Image.fromarray(arr_u8).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def model_server(model_uri, tracking_uri, log_path, timeout_s=180):
    """Serve ``model_uri`` (``--env-manager local``) on a free localhost port; yields the base
    URL once ``/ping`` answers. Stops the server's process group (ours) on exit."""
    port = _free_port()
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
           "MLFLOW_TRACKING_URI": tracking_uri}
    log = open(log_path, "wb")
    server = subprocess.Popen(
        [str(Path(bindir) / "mlflow"), "models", "serve", "-m", model_uri,
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    pytest.fail("server did not start:\n" + Path(log_path).read_text()[-3000:])
                time.sleep(1)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its workers, which we started
        server.wait(timeout=30)
        log.close()


def invoke(base_url, images_u8, params=None, timeout_s=120):
    """POST the images (HxWx3 uint8) to ``/invocations``; returns the predictions."""
    body = {"dataframe_split": {"columns": ["image"], "data": [[b64_png(u8)] for u8 in images_u8]}}
    if params:
        body["params"] = params
    req = urllib.request.Request(f"{base_url}/invocations", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return json.loads(resp.read())["predictions"]
