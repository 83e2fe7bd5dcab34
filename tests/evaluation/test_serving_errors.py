"""Issue 26 §3: a bad request to the served model gets HTTP 400 with its own one-line reason
and no stack trace (ytmt.serving.BadRequest), through MLflow 3.17's real scoring server."""

from __future__ import annotations

import base64
import io
import json
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
import zlib

import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ytmt.serving import BadRequest, log_model


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width``×``height`` pixels (and holds none): Pillow's
    decompression-bomb check refuses it from the header alone."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _good_png() -> str:
    buf = io.BytesIO()
    Image.fromarray(np.full((20, 24, 3), 128, np.uint8)).save(buf, "PNG")
    return _b64(buf.getvalue())


# (image column value, params, the reason the client gets)
BAD = {
    "bad base64": ("***", None, "row 0: column 'image' is not valid base64 (Only base64 data "
                                "is allowed)"),
    "a text file": (_b64(b"just some notes\n"), None, "row 0: not an image"),
    "a decompression bomb": (_b64(_png_header(20000, 20000)), None,
                             "row 0: too large (Image size (400000000 pixels) exceeds limit"),
    "a number": (42, None, "row 0: column 'image' must hold base64 text, got int"),
    "a bad tile": (_good_png(), {"tile": 40}, "params.tile = 40: expected a multiple of 16"),
    "a bad precision": (_good_png(), {"precision": "fp16"},
                        "params.precision = 'fp16': expected one of auto"),
}


@pytest.fixture(scope="module")
def pyfunc(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("serving-errors")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    exp = mlflow.create_experiment("errors", artifact_location=(root / "art").as_uri())
    with mlflow.start_run(experiment_id=exp):
        info = log_model(tiny_checkpoint, name="model")
    yield mlflow.pyfunc.load_model(info.model_uri)
    mlflow.set_tracking_uri(previous)


@pytest.mark.parametrize("case", BAD)
def test_a_bad_row_raises_a_one_line_bad_request(pyfunc, case):
    value, params, reason = BAD[case]
    with pytest.raises(BadRequest) as err:
        # object column, as the server parses JSON (an int64 column fails MLflow's schema)
        pyfunc.predict(pd.DataFrame({"image": pd.Series([value], dtype=object)}),
                       params=params)
    assert err.value.message.startswith(reason) and "\n" not in err.value.message
    assert err.value.get_http_status_code() == 400


@pytest.fixture(scope="module")
def server(pyfunc):
    """MLflow's scoring app (what `mlflow models serve` runs) on a localhost port, in a
    thread of this process (no second Python to start)."""
    import uvicorn
    from mlflow.pyfunc import scoring_server

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(scoring_server.init(pyfunc), host="127.0.0.1",
                                        port=port, log_level="error"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not srv.started:
        assert time.time() < deadline and thread.is_alive(), "scoring server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/invocations"
    srv.should_exit = True
    thread.join(timeout=30)


def _post(url: str, value, params) -> tuple[int, dict]:
    body = {"dataframe_split": {"columns": ["image"], "data": [[value]]}}
    if params:
        body["params"] = params
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.mark.slow
@pytest.mark.parametrize("case", BAD)
def test_the_server_answers_a_bad_request_with_its_reason_and_no_stack_trace(server, case):
    value, params, reason = BAD[case]
    status, answer = _post(server, value, params)
    assert status == 400
    assert answer["error_code"] == "INVALID_PARAMETER_VALUE"
    assert answer["message"].startswith(reason) and "\n" not in answer["message"]
    assert "stack_trace" not in answer and ".py" not in json.dumps(answer)


@pytest.mark.slow
def test_the_server_still_separates_a_good_image(server):
    status, answer = _post(server, _good_png(), {"tile": 0})
    assert status == 200 and set(answer["predictions"][0]) == {"transmission", "reflection"}
