"""Tiny saved models for the evaluation, registry, serving and inference tests."""

import os

import numpy as np
import pytest
import torch
from skimage import data

import ytmt
from ytmt.checkpoint import model_spec, save_checkpoint

WIDTH = 4


def save_tiny(path, variant="ytmt-ucs", seed=0, vgg=None, extra=None, hypercolumn=True):
    """Build a width-4 ``variant`` (random VGG) seeded with ``seed`` and save it at ``path``."""
    torch.manual_seed(seed)
    model = ytmt.build_model(variant, width=WIDTH, hypercolumn=hypercolumn, vgg=vgg,
                             vgg_weights="random")
    save_checkpoint(path, model, model_spec(model, WIDTH), extra=extra)
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, session_random_vgg):
    return save_tiny(tmp_path_factory.mktemp("ckpt") / "model.pt", vgg=session_random_vgg)


@pytest.fixture(scope="session")
def photo():
    """A natural 96x128 RGB photo (float32 in [0, 1]) with structure at every scale."""
    return (data.chelsea()[::3, ::3][:96, :128].astype(np.float32) / 255).copy()


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory):
    """Shards synthesized by ytmt.data from scikit-image's photos: 32 px, 3 test mixtures."""
    from ytmt.data.config import FetchConfig, SynthesizeConfig
    from ytmt.data.sources import fetch_images
    from ytmt.data.synthesis import synthesize_shards

    root = tmp_path_factory.mktemp("shards")
    fetch_images(FetchConfig(samples=("astronaut", "chelsea", "coffee", "rocket",
                                          "motorcycle_left", "motorcycle_right")),
                 root / "images")
    cfg = SynthesizeConfig(size=32, scale_min=32, scale_max=48, train_mixtures=4,
                           val_mixtures=2, test_mixtures=3, val_image_fraction=0.2,
                           test_image_fraction=0.2, workers=1, chunk=4)
    synthesize_shards(root / "images", root / "shards", cfg, seed=0)
    return root / "shards"


def _save_rgb(path, arr):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=95)


def make_benchmarks(root):
    """``root``/data with real20 (3 pairs, no R), sir2/objects (2 pairs with R, JPEG) and a
    broken nature/ (no transmission_layer/); wild is absent. Returns the data manifest path."""
    rng = np.random.default_rng(0)
    cat = data.chelsea()
    for i in range(3):
        t = cat[i * 40:i * 40 + 40, 100:150]
        r = (rng.random((40, 50, 3)) * 60).astype(np.uint8)
        m = np.clip(t.astype(int) + r, 0, 255).astype(np.uint8)
        _save_rgb(root / "data/real20/blended" / f"{i}.png", m)
        _save_rgb(root / "data/real20/transmission_layer" / f"{i}.png", t)
    coffee = data.coffee()
    for i in range(2):
        t = coffee[i * 35:i * 35 + 35, 200:270]
        r = (rng.random((35, 70, 3)) * 80).astype(np.uint8)
        m = np.clip(t.astype(int) + r, 0, 255).astype(np.uint8)
        for sub, img in (("blended", m), ("transmission_layer", t), ("reflection_layer", r)):
            _save_rgb(root / "data/sir2/objects" / sub / f"o{i}.jpg", img)
    _save_rgb(root / "data/nature/blended/n.png", cat[:32, :32])
    return scan_benchmarks(root)


def scan_benchmarks(root):
    """The scan stage's data manifest of ``root``/data (real20, objects, wild, nature)."""
    from ytmt.data.config import DataConfig
    from ytmt.data.manifest import scan, write_manifest

    cfg = DataConfig(root=str(root / "data"), benchmarks={
        "real20": "real20", "objects": "sir2/objects", "wild": "sir2/wild", "nature": "nature"})
    manifest = root / "data_manifest.json"
    write_manifest(scan(cfg), manifest)
    return manifest


#: (variant, folder under models/, validation PSNR of T): the champion is ytmt-ucs seed 1.
TRAINED = [("ytmt-ucs", 0, 20.0), ("ytmt-ucs", 1, 22.0), ("unet-no-fi", 0, 21.0)]


@pytest.fixture(scope="session")
def trained(tmp_path_factory, session_random_vgg):
    """What the train stages leave: models/<variant>/seed<k>/model.pt + info.json, each
    logged as a pyfunc into its own run of a real SQLite MLflow store."""
    import mlflow

    from ytmt.mlflow_model import log_model
    from ytmt.model_store import ModelInfo, run_dir, write_info

    root = tmp_path_factory.mktemp("trained")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    exp = mlflow.create_experiment("ytmt-train", artifact_location=(root / "art").as_uri())
    for i, (variant, seed, val) in enumerate(TRAINED):
        folder = run_dir(root / "models", variant, seed)
        path = save_tiny(folder / "model.pt", variant, seed=i, vgg=session_random_vgg)
        with mlflow.start_run(experiment_id=exp) as run:
            mlflow.log_metric("val_psnr_t", val)
            logged = log_model(path, name="model")
        write_info(folder, ModelInfo(variant=variant, seed=seed, model_path=str(path),
                                     mlflow_run_id=run.info.run_id, model_uri=logged.model_uri,
                                     epochs=1, metrics={"val_psnr_t": val, "epoch": 1},
                                     vgg_weights="random", tracking_uri=uri))
    yield {"root": root, "uri": uri, "models": root / "models", "experiment": exp}
    mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="session")
def evaluated(trained, tiny_shards, tmp_path_factory):
    """The evaluate stage run once on `trained`, the tiny shards and make_benchmarks."""
    from ytmt.evaluation.config import EvaluateConfig
    from ytmt.evaluation.evaluate import run_evaluation

    root = tmp_path_factory.mktemp("eval")
    manifest = make_benchmarks(root)
    # evaluate.tracking_uri null, and the pipeline's fallback (train.tracking_uri) another
    # store: the models' info.json names the store they were trained into, which is followed
    cfg = EvaluateConfig(visual_cases=2)
    env_before = dict(os.environ)
    summary = run_evaluation(cfg, trained["models"], tiny_shards, manifest, root / "eval",
                             root / "metrics" / "eval",
                             tracking_uri=f"sqlite:///{root / 'elsewhere.db'}")
    return {"summary": summary, "root": root, "out": root / "eval", "manifest": manifest,
            "cfg": cfg, "env_before": env_before, "env_after": dict(os.environ)}
