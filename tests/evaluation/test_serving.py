"""The pyfunc model: log, load at two sizes, URIs, and `mlflow models serve` on 127.0.0.1."""

import base64

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from tests.evaluation.serve import b64_png, invoke, model_server
from ytmt.checkpoint import model_from_checkpoint
from ytmt.inference import DEFAULT_PRECISION, decode_image, encode_png, separate
from ytmt.serving import load_separator, log_model


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real local MLflow store (SQLite + artifact folder) in a temp dir."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    exp = mlflow.create_experiment("serving", artifact_location=(root / "art").as_uri())
    yield uri, exp
    mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="module")
def logged(store, tiny_checkpoint):
    uri, exp = store
    with mlflow.start_run(experiment_id=exp) as run:
        info = log_model(tiny_checkpoint, name="model")
    return info, run.info.run_id


def test_pyfunc_works_at_any_size_and_matches_in_process(logged, tiny_checkpoint, photo):
    info, _ = logged
    pf = mlflow.pyfunc.load_model(info.model_uri)
    model = model_from_checkpoint(tiny_checkpoint)
    for shape in [(96, 128), (40, 72)]:  # two sizes: no size specialisation
        u8 = (photo[:shape[0], :shape[1]] * 255).round().astype(np.uint8)
        out = pf.predict(pd.DataFrame({"image": [b64_png(u8)]}), params={"tile": 0})
        assert list(out.columns) == ["transmission", "reflection"]
        t_served = decode_image(base64.b64decode(out.loc[0, "transmission"]))
        r_served = decode_image(base64.b64decode(out.loc[0, "reflection"]))
        t_hat, r_hat = separate(model, u8.astype(np.float32) / 255, tile=None,
                                precision=DEFAULT_PRECISION)
        assert t_served.shape == shape + (3,)
        np.testing.assert_array_equal(t_served, decode_image(encode_png(t_hat)))
        np.testing.assert_array_equal(r_served, decode_image(encode_png(r_hat)))
    # an explicit precision is honoured: fp32 is the exact fp32 model
    out = pf.predict(pd.DataFrame({"image": [b64_png(u8)]}),
                     params={"tile": 0, "precision": "fp32"})
    t_hat, _ = separate(model, u8.astype(np.float32) / 255, tile=None, precision="fp32")
    np.testing.assert_array_equal(decode_image(base64.b64decode(out.loc[0, "transmission"])),
                                  decode_image(encode_png(t_hat)))


def test_pyfunc_rejects_bad_rows(logged):
    pf = mlflow.pyfunc.load_model(logged[0].model_uri)
    with pytest.raises(Exception, match="not valid base64"):
        pf.predict(pd.DataFrame({"image": ["***"]}))
    with pytest.raises(Exception, match="not an image"):
        pf.predict(pd.DataFrame({"image": [base64.b64encode(b"hello").decode()]}))
    with pytest.raises(Exception, match="params.precision = 'fp16': expected one of auto"):
        pf.predict(pd.DataFrame({"image": ["AAAA"]}), params={"precision": "fp16"})


def test_log_model_needs_a_run_and_a_safe_checkpoint(store, tmp_path):
    with pytest.raises(RuntimeError, match="active MLflow run"):
        log_model(tmp_path / "x.pt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with mlflow.start_run(experiment_id=store[1]), pytest.raises(ValueError,
                                                                  match="not a ytmt checkpoint"):
        log_model(foreign)


def test_load_separator_from_runs_and_registry_uris(store, logged, tiny_checkpoint):
    uri, _ = store
    info, run_id = logged
    want = model_from_checkpoint(tiny_checkpoint).state_dict()
    version = mlflow.register_model(info.model_uri, "ytmt-serving-test").version
    mlflow.MlflowClient().set_registered_model_alias("ytmt-serving-test", "champion", version)
    for ref in (f"runs:/{run_id}/model", "models:/ytmt-serving-test@champion", info.model_uri):
        got = load_separator(ref, tracking_uri=uri).state_dict()
        assert got.keys() == want.keys()
        assert all((got[k] == want[k]).all() for k in want)
    with pytest.raises(Exception, match="not found"):
        load_separator("models:/no-such-model@champion", tracking_uri=uri)


@pytest.mark.slow
def test_mlflow_models_serve_answers_on_localhost(store, logged, tiny_checkpoint, photo,
                                                  tmp_path):
    uri, _ = store
    info, _ = logged
    u8 = (photo * 255).round().astype(np.uint8)
    with model_server(info.model_uri, uri, tmp_path / "serve.log") as url:
        pred = invoke(url, [u8], params={"tile": 64, "overlap": 16})[0]
    t_served = decode_image(base64.b64decode(pred["transmission"]))
    r_served = decode_image(base64.b64decode(pred["reflection"]))
    mixture = u8.astype(np.float32) / 255
    t_hat, r_hat = separate(model_from_checkpoint(tiny_checkpoint), mixture, tile=64, overlap=16,
                            precision=DEFAULT_PRECISION)  # the server's default
    # The served layers add up to the input exactly as well as the model's own outputs do
    # (the model's reconstruction error), up to the 8-bit PNG quantisation of each layer.
    served_err = np.abs(t_served + r_served - mixture)
    model_err = np.abs(t_hat + r_hat - mixture)
    assert np.abs(served_err - model_err).max() <= 1 / 255 + 1e-6
    np.testing.assert_allclose(t_served, t_hat, atol=0.5 / 255 + 1e-6)
    np.testing.assert_allclose(r_served, r_hat, atol=0.5 / 255 + 1e-6)
