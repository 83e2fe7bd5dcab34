"""The frozen inputs a cluster driver ships to its workers (ytmt.cluster): the VGG-19 as the
driver resolved it and the stage-1 checkpoint's bytes, through Ray's object store, so a worker
never reads them from its own node's disk (where they may be absent, or different)."""

from __future__ import annotations

import hashlib

import pytest
import torch

from tests.train.conftest import tiny_params
from ytmt.archs.vgg import VGG19Features
from ytmt.params import resolve_params
from ytmt.train.components import build_components
from ytmt.train.shipping import (
    SHIPPED_KEY,
    received_stage1,
    received_vgg,
    ship_frozen_inputs,
)


def _digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].contiguous().numpy().tobytes())
    return h.hexdigest()


def _on_a_worker(ray, config: dict, folder: str) -> dict:
    """What a Ray worker process (another process, another cwd) builds from ``config``."""

    @ray.remote(num_cpus=0)
    def receive(config: dict, folder: str) -> dict:
        vgg = received_vgg(config)()
        stage1 = received_stage1(config, folder)
        return {"mode": vgg.weights.mode, "source": vgg.weights.source,
                "digest": _digest(vgg.state_dict()),
                "stage1": open(stage1, "rb").read() if stage1 else None}

    return ray.get(receive.remote(config, folder))


def test_imagenet_weights_and_stage1_travel_through_the_object_store(ray_local, tmp_path):
    vgg_file = tmp_path / "driver-only" / "vgg19.pth"
    vgg_file.parent.mkdir()
    torch.manual_seed(1)
    imagenet_like = VGG19Features().state_dict()  # torchvision's key names
    torch.save(imagenet_like, vgg_file)
    stage1 = tmp_path / "driver-only" / "model.pt"
    stage1.write_bytes(b"stage-1 checkpoint bytes")
    config = {"stage1_checkpoint": str(stage1)}
    ship_frozen_inputs(config, "auto", str(vgg_file), vgg_seed=0)
    # the node's copies are gone: the worker must not need them
    vgg_file.unlink()
    stage1.unlink()
    (tmp_path / "worker").mkdir()
    got = _on_a_worker(ray_local, config, str(tmp_path / "worker"))
    assert got["mode"] == "imagenet" and got["source"] == str(vgg_file)
    assert got["digest"] == _digest(imagenet_like)
    assert got["stage1"] == b"stage-1 checkpoint bytes"


def test_auto_without_a_file_on_the_driver_is_random_on_every_worker(ray_local, tmp_path):
    vgg_file = tmp_path / "vgg19.pth"
    config: dict = {}
    ship_frozen_inputs(config, "auto", str(vgg_file), vgg_seed=3)
    assert config[SHIPPED_KEY]["vgg_mode"] == "random"
    # a worker whose node has a file there still builds what the driver resolved
    torch.save(VGG19Features().state_dict(), vgg_file)
    got = _on_a_worker(ray_local, config, str(tmp_path))
    assert (got["mode"], got["source"]) == ("random", "seed=3")
    assert got["stage1"] is None


@pytest.mark.parametrize("variant", ["ytmt-ucs"])
def test_a_shipped_vgg_gives_the_same_initial_model(ray_local, variant):
    params = resolve_params(tiny_params())
    config: dict = {}
    ship_frozen_inputs(config, "random", None, vgg_seed=params.model.vgg_seed)
    local = build_components(params, variant, warn_random_vgg=False).model.state_dict()
    shipped = build_components(params, variant, warn_random_vgg=False,
                               make_vgg=received_vgg(config)).model.state_dict()
    assert local.keys() == shipped.keys()
    assert all(torch.equal(local[k], shipped[k]) for k in local)
    # control: building the VGG outside the seeded sequence changes the model's init
    vgg = received_vgg(config)()
    shifted = build_components(params, variant, warn_random_vgg=False,
                               make_vgg=lambda: vgg).model.state_dict()
    assert not all(torch.equal(local[k], shifted[k]) for k in local if "vgg" not in k)
