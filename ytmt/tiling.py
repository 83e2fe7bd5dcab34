"""Tiles for large photos: where they start, how neighbours blend, and the defaults.

Pure numpy, no torch: the logged MLflow model's signature (:mod:`ytmt.mlflow_model`) carries
the defaults, and :func:`ytmt.inference.separate` cuts an image into ``tile``×``tile`` tiles
that overlap by ``overlap`` pixels, weighting each tile by a ramp that falls towards its
inner edges (cosine or linear) so seams disappear.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np

ALIGN = 16  # the U-Nets pool four times: inputs are padded to multiples of 16
DEFAULT_TILE = 256
DEFAULT_OVERLAP = 32
Blend = Literal["cosine", "linear"]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels covering ``length`` with at least ``overlap``
    pixels shared between neighbours; one tile when ``length <= tile``."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def _ramp(n: int, overlap: int, rise: bool, fall: bool, blend: Blend) -> np.ndarray:
    """1-D weights of a tile of ``n`` pixels: 1 inside, rising over the first ``overlap``
    pixels when ``rise`` (a neighbour before it) and falling over the last when ``fall``.
    Never exactly 0, so every pixel has a positive total weight."""
    w = np.ones(n, np.float32)
    k = min(overlap, n)
    if k == 0:
        return w
    pos = (np.arange(k, dtype=np.float32) + 0.5) / k  # (0, 1)
    edge = pos if blend == "linear" else (0.5 - 0.5 * np.cos(np.pi * pos)).astype(np.float32)
    if rise:
        w[:k] = np.minimum(w[:k], edge)
    if fall:
        w[n - k:] = np.minimum(w[n - k:], edge[::-1])
    return w


def iter_tiles(height: int, width: int, tile: int,
               overlap: int) -> Iterator[tuple[int, int, int, int]]:
    """(top, left, h, w) of every tile, row by row."""
    for top in tile_starts(height, tile, overlap):
        for left in tile_starts(width, tile, overlap):
            yield top, left, min(tile, height - top), min(tile, width - left)


def check_tiling(tile: int, overlap: int) -> None:
    if tile < 2 * ALIGN or tile % ALIGN:
        raise ValueError(f"tile = {tile}: expected a multiple of {ALIGN}, at least {2 * ALIGN}")
    if not 0 <= overlap <= tile // 2:
        raise ValueError(f"overlap = {overlap}: expected 0 <= overlap <= tile/2 = {tile // 2}")


def tile_count(height: int, width: int, tile: int | None, overlap: int) -> int:
    """How many model passes :func:`separate` makes for an image of this size."""
    if tile is None or (height <= tile and width <= tile):
        return 1
    return len(tile_starts(height, tile, overlap)) * len(tile_starts(width, tile, overlap))
