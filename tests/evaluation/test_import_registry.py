"""`ytmt import-authors --register` on a real SQLite MLflow store: version, alias and tags;
`ytmt separate --model models:/ytmt@authors-uct`; `mlflow models serve` on it (one server);
a failure after registering takes the registration back."""

import base64
import json

import mlflow
import numpy as np
import pytest
from PIL import Image

from tests.archs.authors_reference import random_authors_nets, save_hash_named_vgg, save_released
from tests.evaluation.serve import invoke, model_server
from ytmt import cli
from ytmt.authors import import_authors
from ytmt.checkpoint import model_from_checkpoint
from ytmt.inference import decode_image, separate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    root = tmp_path_factory.mktemp("import-registry")
    file = save_released(root / "ytmt_uct_sirs_68_077_00595364.pt", *random_authors_nets(8))
    vgg, _ = save_hash_named_vgg(root)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    rc = cli.main(["import-authors", str(file), "--out", str(root / "authors-uct"), "--vgg-path",
                   str(vgg), "--register", "ytmt", "--tracking-uri", uri])
    assert rc == 0
    return {"root": root, "uri": uri, "file": file, "vgg": vgg, "out": root / "authors-uct",
            "info": json.loads((root / "authors-uct" / "info.json").read_text())}


def test_imported_model_is_a_version_with_alias_and_source_tags(registered):
    client = mlflow.MlflowClient(registered["uri"])
    mv = client.get_model_version_by_alias("ytmt", "authors-uct")
    info = registered["info"]
    assert info["source"]["registered"] == {"name": "ytmt", "alias": "authors-uct",
                                  "version": int(mv.version), "uri": "models:/ytmt@authors-uct"}
    assert mv.tags["source_file"] == "ytmt_uct_sirs_68_077_00595364.pt"
    assert mv.tags["source_sha256"] == info["source"]["sha256"]
    assert (mv.tags["source_epoch"], mv.tags["source_iterations"]) == ("68", "595364")
    assert (mv.tags["variant"], mv.tags["vgg_weights"]) == ("ytmt-uct-released", "imagenet")
    assert mv.tags["ytmt.model_uri"] == info["model_uri"]  # the register stage reuses it
    run = client.get_run(info["mlflow_run_id"])
    assert run.data.params["iterations"] == "595364" and run.info.status == "FINISHED"


def test_separate_with_the_registry_alias(registered, tmp_path, photo):
    u8 = (photo[:40, :56] * 255).round().astype(np.uint8)
    Image.fromarray(u8).save(tmp_path / "photo.png")
    assert cli.main(["separate", str(tmp_path / "photo.png"), "--model",
                     "models:/ytmt@authors-uct", "--out", str(tmp_path / "out"),
                     "--tracking-uri", registered["uri"], "--precision", "fp32"]) == 0
    t_hat, _ = separate(model_from_checkpoint(registered["out"] / "model.pt"),
                        u8.astype(np.float32) / 255)
    written = np.asarray(Image.open(tmp_path / "out" / "photo_T.png")).astype(np.float32) / 255
    assert np.abs(written - t_hat).max() <= 0.5 / 255 + 1e-6


def test_mlflow_models_serve_on_the_alias(registered, photo, tmp_path):
    u8 = (photo[:48, :64] * 255).round().astype(np.uint8)
    with model_server("models:/ytmt@authors-uct", registered["uri"],
                      tmp_path / "serve.log") as url:
        pred = invoke(url, [u8], params={"tile": 0, "precision": "fp32"})[0]
    t_hat, r_hat = separate(model_from_checkpoint(registered["out"] / "model.pt"),
                            u8.astype(np.float32) / 255, tile=None)
    for key, ref in (("transmission", t_hat), ("reflection", r_hat)):
        served = decode_image(base64.b64decode(pred[key]))
        assert served.shape == (48, 64, 3)
        np.testing.assert_allclose(served, ref, atol=0.5 / 255 + 1e-6)


def test_a_failure_after_registering_takes_it_back(registered, tmp_path, monkeypatch):
    import ytmt.fileio as fileio

    def fail(src, dst):  # the last step, after the registration
        raise OSError("disk full (injected)")

    monkeypatch.setattr(fileio, "replace_dir", fail)
    client = mlflow.MlflowClient(registered["uri"])
    before = len(client.search_model_versions("name='ytmt'"))
    with pytest.raises(OSError, match="disk full"):
        import_authors(registered["file"], tmp_path / "new", vgg_path=registered["vgg"],
                       register_name="ytmt", alias="second", tracking_uri=registered["uri"])
    assert not (tmp_path / "new").exists() and not list(tmp_path.glob(".new*"))
    assert len(client.search_model_versions("name='ytmt'")) == before
    assert int(client.get_model_version_by_alias("ytmt", "authors-uct").version) == \
        registered["info"]["source"]["registered"]["version"]
    with pytest.raises(Exception, match="second"):
        client.get_model_version_by_alias("ytmt", "second")
    runs = client.search_runs([client.get_experiment_by_name("ytmt-import").experiment_id])
    assert [r.info.run_id for r in runs] == [registered["info"]["mlflow_run_id"]]
