"""Fixtures for the training tests: a tiny real shard set, tiny params, one local Ray."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import IterableDataset

from ytmt.config import to_dict
from ytmt.params import Params
from ytmt.ray_local import free_port

BIN = Path(sys.executable).parent  # the venv's bin: mlflow, moto_server, ray


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
    # no perceptual loss (its VGG passes make a step ~10x dearer, README): the tests whose
    # subject it is turn it on with loss__perceptual=0.1
    data["loss"]["perceptual"] = 0.0
    # fp32: the loop's tests compare runs to tight tolerances (bf16 has its own tests)
    data["train"].update(num_workers=0, batch_size=4, crop=32, epochs=1, lr=1e-3,
                         log_every_steps=100, sample_count=2, cpus_per_worker=0.5,
                         precision="fp32")
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

    from ytmt.ray_local import start_local_ray

    started = not ray.is_initialized()
    if started:
        start_local_ray(2, log_to_driver=True)
    yield ray
    if started:
        ray.shutdown()


def pickle_by_value(module_name: str) -> None:
    """Ship a test module's functions and classes to Ray workers by value (the workers
    cannot import the tests package)."""
    import ray.cloudpickle as cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[module_name])


class Pairs(IterableDataset):
    """``n`` fixed random (M, T, R) samples of ``size`` px; rank r of w yields the contiguous
    block r of w and writes the ids it yielded to ``log_dir`` (to check that workers' data
    are disjoint)."""

    def __init__(self, split, n, size, rank, world_size, log_dir):
        self.split, self.size, self.log_dir = split, size, Path(log_dir)
        per = n // world_size
        self.indices = list(range(rank * per, (rank + 1) * per))
        self.tag = f"{split}-rank{rank}-of{world_size}"

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.indices)

    def __iter__(self):
        seen = []
        for i in self.indices:
            g = torch.Generator().manual_seed(1000 * (self.split == "val") + i)
            t = torch.rand(3, self.size, self.size, generator=g) * 0.6
            r = torch.rand(3, self.size, self.size, generator=g) * 0.4
            seen.append(f"{self.split}-{i}")
            yield {"mixture": (t + r).clamp(0, 1), "transmission": t, "reflection": r,
                   "is_real": torch.tensor(False), "id": f"{self.split}-{i}"}
        (self.log_dir / f"{self.tag}.txt").write_text("\n".join(seen))


class PairsFn:
    """A ``dataset_fn`` of the loop: ``train`` fixed training samples and 2 validation ones,
    of ``size`` px."""

    def __init__(self, log_dir, train, size=32):
        self.log_dir, self.train, self.size = str(log_dir), train, size

    def __call__(self, root, split, crop, augment, seed, rank, world_size):
        n = self.train if split == "train" else 2
        return Pairs(split, n, self.size, rank, world_size, self.log_dir)


#: the S3 credentials the tests' moto server accepts (any; it checks none)
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "ytmt-test", "AWS_SECRET_ACCESS_KEY": "ytmt-test-secret",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture
def s3_server(tmp_path):
    """A moto S3 server on 127.0.0.1 with an empty bucket ``ytmt``; stopped after the test."""
    import pyarrow.fs as pafs

    port = free_port()
    log = (tmp_path / "s3.log").open("wb")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    fs = pafs.S3FileSystem(access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                           secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                           endpoint_override=f"127.0.0.1:{port}", scheme="http",
                           region="us-east-1", allow_bucket_creation=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                fs.create_dir("ytmt")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((tmp_path / "s3.log").read_text()[-2000:]) from None
                time.sleep(0.5)
        yield port, fs
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


@pytest.fixture
def mlflow_server(tmp_path):
    """``mlflow server --serve-artifacts`` on 127.0.0.1 (clients talk HTTP only)."""
    from tests.evaluation.test_model_anywhere import _stop, _wait_http
    from ytmt.ray_local import free_port

    store = tmp_path / "mlflow-server"
    store.mkdir()
    port = free_port()
    log = tmp_path / "mlflow-server.log"
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
         "--artifacts-destination", str(store / "artifacts"), "--serve-artifacts",
         "--workers", "1"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"})
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", server, log)
        yield f"http://127.0.0.1:{port}", store
    finally:
        _stop(server)
