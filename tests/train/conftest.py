"""Fixtures for the training tests: a tiny real shard set, tiny params, one local Ray."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ytmt.config import to_dict
from ytmt.params import Params


def make_shards(root: Path, size: int, train: int, val: int) -> Path:
    """Shards synthesized by ytmt.data from scikit-image's bundled photos under ``root``."""
    from ytmt.data.config import FetchConfig, SynthesizeConfig
    from ytmt.data.sources import fetch_images
    from ytmt.data.synthesis import synthesize_shards

    fetch_images(FetchConfig(), root / "images")
    cfg = SynthesizeConfig(size=size, scale_min=size, scale_max=2 * size, train_mixtures=train,
                           val_mixtures=val, test_mixtures=4, workers=1, chunk=16)
    synthesize_shards(root / "images", root / "shards", cfg, seed=0)
    return root / "shards"


@pytest.fixture(scope="session")
def shards(tmp_path_factory) -> Path:
    """Tiny real shards: 48 px stored, 64 train, 8 val and 4 test mixtures (seconds)."""
    return make_shards(tmp_path_factory.mktemp("data"), size=48, train=64, val=8)


def tiny_params(tmp_path: Path | None = None, **overrides) -> dict:
    """Plain params dict for a tiny, fast run; ``overrides`` use dotted keys
    (``{"train.epochs": 2}`` as ``train__epochs=2``)."""
    data = to_dict(Params())
    data["model"].update(width=4, vgg_weights="random")
    data["train"].update(num_workers=0, batch_size=4, crop=32, epochs=1, lr=1e-3,
                         log_every_steps=100, sample_count=2, cpus_per_worker=0.5)
    if tmp_path is not None:
        data["train"]["storage_path"] = str(tmp_path / "ray_results")
        data["train"]["tracking_uri"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for key, value in overrides.items():
        section, name = key.split("__")
        data[section][name] = value
    return data


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray (2 logical CPUs, loopback only), shut down only if this fixture started it."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False,
                 log_to_driver=True)
    yield ray
    if started:
        ray.shutdown()


def pickle_by_value(module_name: str) -> None:
    """Ship a test module's functions and classes to Ray workers by value (the workers
    cannot import the tests package)."""
    import ray.cloudpickle as cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[module_name])
