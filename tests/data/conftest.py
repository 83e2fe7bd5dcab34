"""Tiny photo folders and shard sets made by the tests themselves (no downloads)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ytmt.data.config import FetchConfig, SynthesizeConfig
from ytmt.data.sources import fetch_images
from ytmt.data.synthesis import synthesize_shards


def smooth_photo(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A photo-like (H, W, 3) uint8 image: smooth colour gradients plus texture."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    chans = []
    for _ in range(3):
        a, b, c, f = rng.uniform(0, 1, 4)
        chans.append(0.5 + 0.25 * np.sin(2 * np.pi * (a * yy + b * xx) * (1 + 3 * f) + c * 6)
                     + 0.1 * rng.standard_normal((h, w)))
    return np.clip(np.stack(chans, -1) * 255, 0, 255).astype(np.uint8)


def write_photos(folder: Path, n: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        h, w = (60, 80) if i % 2 else (80, 64)
        p = folder / f"photo{i:02d}.{'jpg' if i % 3 else 'png'}"
        Image.fromarray(smooth_photo(rng, h, w)).save(p)
        paths.append(p)
    return paths


TINY = SynthesizeConfig(size=32, scale_min=32, scale_max=48, train_mixtures=24,
                        val_mixtures=8, test_mixtures=8, chunk=8, workers=1)


@pytest.fixture(scope="session")
def tiny_cfg() -> SynthesizeConfig:
    return TINY


@pytest.fixture(scope="session")
def images_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    write_photos(root / "src", 8)
    fetch_images(FetchConfig(source="folder", folder=str(root / "src"), min_side=16),
                 root / "images")
    return root / "images"


@pytest.fixture(scope="session")
def shards(tmp_path_factory, images_dir) -> Path:
    out = tmp_path_factory.mktemp("shards") / "shards"
    synthesize_shards(images_dir, out, TINY, seed=0)
    return out


@pytest.fixture(scope="session")
def big_shards(tmp_path_factory, images_dir) -> Path:
    """More train rows in several row groups and parts (for sharding tests)."""
    out = tmp_path_factory.mktemp("big") / "shards"
    cfg = replace(TINY, train_mixtures=61, chunk=4, shard_mb=0.09)
    synthesize_shards(images_dir, out, cfg, seed=1)
    return out
