"""Benchmark sets in the common layout (Real20, SIR² Objects/Postcard/Wild, Nature), read the
way the paper tests them (design.md s2).

Each pair is read as 8-bit RGB by :mod:`ytmt.imageio` (the decoder training and inference
use), then the mixture, the transmission (and a ground-truth
reflection when the set has ``reflection_layer/``) are resized with PIL's bicubic filter to the
transmission's ``(h//16·16, w//16·16)``, as the authors' test loader does. The reflection
target is that ground truth when present, else ``I − T`` (real sets have no R).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ytmt.data.layout import PairFiles, find_pairs
from ytmt.imageio import read
from ytmt.metrics import align16, aligned_size, reflection_target

ReflectionSource = Literal["ground_truth", "I-T"]


@dataclass(frozen=True)
class BenchmarkPair:
    """One test pair; images HxWx3 float32 in [0, 1] (the reflection ``I − T`` may dip
    below 0), H and W multiples of 16 when read with ``align=True``."""

    name: str
    mixture: np.ndarray
    transmission: np.ndarray
    reflection: np.ndarray
    reflection_source: ReflectionSource


def _resize_u8(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if img.shape[:2] == size:
        return img
    return np.asarray(Image.fromarray(img).resize((size[1], size[0]),
                                                  Image.Resampling.BICUBIC))


def read_pair(files: PairFiles, align: bool = True) -> BenchmarkPair:
    """Read one pair of the common layout (see module docstring). Without ``align``, images
    of different sizes are an error."""
    trans = read(files.transmission).rgb
    mix = read(files.blended).rgb
    refl = read(files.reflection).rgb if files.reflection is not None else None
    if align:
        size = aligned_size(*trans.shape[:2])
        trans = align16(trans)
        mix = _resize_u8(mix, size)
        refl = _resize_u8(refl, size) if refl is not None else None
    else:
        for other, label in ((mix, "blended"), (refl, "reflection_layer")):
            if other is not None and other.shape != trans.shape:
                raise ValueError(f"{files.name}: {label} is {other.shape[:2]}, "
                                 f"transmission_layer is {trans.shape[:2]}")
    m, t = mix.astype(np.float32) / 255, trans.astype(np.float32) / 255
    if refl is not None:
        return BenchmarkPair(files.name, m, t, refl.astype(np.float32) / 255, "ground_truth")
    return BenchmarkPair(files.name, m, t, reflection_target(m, t), "I-T")


def read_benchmark(folder: str | Path, align: bool = True) -> Iterator[BenchmarkPair]:
    """The pairs of a set in the common layout, sorted by name, read lazily (one in memory at
    a time). Raises ytmt.data.layout.LayoutError for a broken layout."""
    for files in find_pairs(folder):
        yield read_pair(files, align)


def benchmark_size(folder: str | Path) -> int:
    return len(find_pairs(folder))
