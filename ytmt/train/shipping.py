"""The frozen inputs a cluster driver ships to its Ray Train workers: the VGG-19 as the
driver resolved it and a two-stage run's stage-1 checkpoint, through Ray's object store, so a
worker never reads them from its own node's disk (where they may be absent, or different).
See docs/cluster.md; the guards and the runtime env are in :mod:`ytmt.cluster`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

SHIPPED_KEY = "shipped"


def ship_frozen_inputs(loop_config: dict[str, Any], vgg_mode: str, vgg_path: str | None,
                       vgg_seed: int) -> None:
    """Driver side, Ray connected: put what every worker must read identically into Ray's
    object store and record it in ``loop_config[SHIPPED_KEY]``: the VGG-19 the *driver*
    resolved (ImageNet weights read here, or the seeded random weights when this driver has
    no file, so ``auto`` never means ImageNet on one node and random on another) and the
    stage-1 checkpoint's bytes (a path that exists on the driver's node only)."""
    import ray

    from ytmt.archs.vgg import find_vgg19_file, load_vgg19

    shipped: dict[str, Any] = {"vgg_mode": "random", "vgg_seed": int(vgg_seed)}
    found = find_vgg19_file(vgg_path) if vgg_mode != "random" else None
    if found is not None:
        vgg = load_vgg19("imagenet", found)  # hash-checked here, once
        shipped.update(vgg_mode="imagenet", vgg_source=vgg.weights.source,
                       vgg_state=ray.put(vgg.state_dict()))
    stage1 = loop_config.get("stage1_checkpoint")
    if stage1:
        shipped["stage1_name"] = Path(stage1).name
        shipped["stage1"] = ray.put(Path(stage1).read_bytes())
    loop_config[SHIPPED_KEY] = shipped


def received_vgg(config: dict[str, Any]) -> Callable[[], Any] | None:
    """Worker side: a function that builds the VGG19Features the driver shipped (None when
    nothing was shipped: in-process runs and callers that read the node's own files). A
    function, so that the caller builds it where it would have loaded one: constructing the
    network draws from torch's global generator, and the model built next must get the
    same initial weights either way."""
    shipped = config.get(SHIPPED_KEY)
    if not shipped:
        return None

    def build():
        import ray

        from ytmt.archs.vgg import VGG19Features, VGGWeights, load_vgg19

        if shipped["vgg_mode"] != "imagenet":
            return load_vgg19("random", seed=shipped["vgg_seed"], warn=False)
        vgg = VGG19Features()
        vgg.load_state_dict(ray.get(shipped["vgg_state"]))
        vgg.weights = VGGWeights("imagenet", shipped["vgg_source"])
        return vgg.eval()

    return build


def received_stage1(config: dict[str, Any], folder: str | Path) -> str | None:
    """Worker side: the stage-1 checkpoint as a file in ``folder`` (shipped bytes), else the
    path the config names."""
    shipped = config.get(SHIPPED_KEY) or {}
    if "stage1" not in shipped:
        return config.get("stage1_checkpoint")
    import ray

    path = Path(folder) / shipped["stage1_name"]
    path.write_bytes(ray.get(shipped["stage1"]))
    return str(path)
