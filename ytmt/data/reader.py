"""Training-time reader: streams (M, T, R) samples from the Parquet shards.

>>> check_shards("outputs/shards")            # fast: manifest + file sizes, no decoding
>>> ds = ShardDataset("outputs/shards", split="train", crop=64, augment=True, seed=0,
...                   rank=ray.train.get_context().get_world_rank(),
...                   world_size=ray.train.get_context().get_world_size())
>>> loader = DataLoader(ds, batch_size=8, num_workers=2)
>>> for epoch in range(n):
...     ds.set_epoch(epoch)
...     for batch in loader: ...  # batch["mixture"]: (B, 3, 64, 64) float32 in [0, 1]

Sharding. Each epoch the row groups are put in an order drawn from ``(seed, epoch)``
(storage order without ``shuffle``, which defaults to ``augment``); the concatenated sample
sequence is padded by wrapping around to a multiple of ``world_size`` and cut into
``world_size`` contiguous blocks, one per rank, so every rank yields
``len(ds) = ceil(N / world_size)`` samples and ranks are disjoint apart from at most
``world_size − 1`` wrapped samples. Inside a rank, DataLoader workers take contiguous
sub-blocks; samples are shuffled within windows of ``shuffle_window`` samples. A block
touches only the row groups it needs, so each rank reads about ``1 / world_size`` of the data.
Call ``set_epoch`` before iterating; with DataLoader workers, do not use
``persistent_workers`` (the workers' copies would keep the old epoch).

Augmentation (``augment=True``): albumentations ``RandomCrop`` and ``HorizontalFlip``
applied identically to M, T and R (no photometric change: it would break M ≈ T + R).
Without ``augment`` a ``crop`` is a centre crop, and ``crop=None`` yields the stored size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ytmt.data.shards import IMAGE_COLUMNS, SPLITS, iter_row_groups, read_manifest


def check_shards(root: str | Path, splits: tuple[str, ...] = SPLITS) -> None:
    """Raise FileNotFoundError / ValueError with a clear message unless ``root`` holds a
    complete shard set with every split in ``splits``. Reads only the manifest and file sizes."""
    manifest = read_manifest(root)
    missing = [s for s in splits if s not in manifest["splits"]]
    if missing:
        raise ValueError(f"{root}: shard set has no split(s) {missing}; it has "
                         f"{sorted(manifest['splits'])}")


def _images(table: pa.Table, column: str, height: int, width: int) -> np.ndarray:
    """A binary column of raw RGB bytes as a zero-copy ``(N, H, W, 3) uint8`` view."""
    arr = table.column(column).combine_chunks()
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], np.int32, n + 1, arr.offset * 4)
    size = height * width * 3
    if not np.array_equal(np.diff(offsets), np.full(n, size, np.int32)):
        raise ValueError(f"column {column}: rows are not {height}x{width}x3 uint8 images")
    data = np.frombuffer(arr.buffers()[2], np.uint8, n * size, int(offsets[0]))
    return data.reshape(n, height, width, 3)


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    """``(H, W, 3) uint8`` -> ``(3, H, W) float32`` in [0, 1] (planar copy in bytes first:
    much cheaper than a strided float conversion)."""
    planar = np.ascontiguousarray(img.transpose(2, 0, 1))
    return torch.from_numpy(planar).float().mul_(1.0 / 255.0)


class ShardDataset(IterableDataset):
    """Samples of one split as dicts: ``mixture``, ``transmission``, ``reflection`` each
    ``(3, crop, crop) float32`` in [0, 1] (stored size when ``crop`` is None), ``is_real``
    a bool tensor, ``id`` a str. See the module docstring for sharding and augmentation.

    ``shuffle`` (default: same as ``augment``) draws the order from ``(seed, epoch)``;
    otherwise samples come in storage order. ``flip_p``: horizontal flip probability."""

    def __init__(self, root: str | Path, split: str = "train", crop: int | None = None,
                 augment: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1,
                 flip_p: float = 0.5, shuffle_window: int = 128, shuffle: bool | None = None):
        super().__init__()
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank = {rank}, world_size = {world_size}: need 0 <= rank < "
                             "world_size")
        self.root = Path(root)
        manifest = read_manifest(self.root)
        if split not in manifest["splits"]:
            raise ValueError(f"{self.root}: no split {split!r}; it has "
                             f"{sorted(manifest['splits'])}")
        self.height, self.width = manifest["size"]
        if crop is not None and not 1 <= crop <= min(self.height, self.width):
            raise ValueError(f"crop = {crop}: must be in [1, {min(self.height, self.width)}] "
                             f"(stored size {self.height}x{self.width})")
        self.split, self.crop, self.augment = split, crop, augment
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.shuffle = augment if shuffle is None else shuffle
        self.shuffle_window = max(1, shuffle_window)
        self.epoch = 0
        self._groups = list(iter_row_groups(self.root, split, manifest))
        self.num_samples = sum(g[2] for g in self._groups)
        self._transform = self._build_transform(flip_p)

    def _build_transform(self, flip_p: float) -> A.Compose | None:
        ops: list[A.BasicTransform] = []
        if self.crop is not None and (self.crop, self.crop) != (self.height, self.width):
            cls = A.RandomCrop if self.augment else A.CenterCrop
            ops.append(cls(height=self.crop, width=self.crop))
        if self.augment and flip_p > 0:
            ops.append(A.HorizontalFlip(p=flip_p))
        if not ops:
            return None
        return A.Compose(ops, additional_targets={"transmission": "image",
                                                  "reflection": "image"}, seed=self.seed)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation are drawn (deterministic)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.world_size)

    def rank_plan(self, rank: int | None = None) -> list[tuple[int, int]]:
        """``(row group index, row)`` pairs rank ``rank`` yields this epoch, before the
        in-window shuffle."""
        rank = self.rank if rank is None else rank
        order = np.arange(len(self._groups))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(order)
        seq = [(int(g), r) for g in order for r in range(self._groups[g][2])]
        per_rank = len(self)
        if not seq:
            return []
        total = per_rank * self.world_size
        seq = (seq * math.ceil(total / len(seq)))[:total]
        return seq[rank * per_rank:(rank + 1) * per_rank]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        plan = self.rank_plan()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        plan = plan[worker * len(plan) // workers:(worker + 1) * len(plan) // workers]
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker, 1])
        if self._transform is not None:
            self._transform.set_random_seed(
                int(np.random.default_rng([self.seed, self.epoch, self.rank, worker, 2])
                    .integers(2**31)))
        cache: dict[int, tuple[dict[str, np.ndarray], list[str], list[bool]]] = {}
        for start in range(0, len(plan), self.shuffle_window):
            window = plan[start:start + self.shuffle_window]
            needed = {g for g, _ in window}
            cache = {g: v for g, v in cache.items() if g in needed}
            for g in needed - cache.keys():
                cache[g] = self._read_group(g)
            if self.shuffle:
                window = [window[i] for i in rng.permutation(len(window))]
            for g, row in window:
                images, ids, real = cache[g]
                yield self._sample({k: v[row] for k, v in images.items()}, ids[row], real[row])

    def _read_group(self, g: int) -> tuple[dict[str, np.ndarray], list[str], list[bool]]:
        path, index, _ = self._groups[g]
        table = pq.ParquetFile(path).read_row_group(
            index, columns=["id", "is_real", *IMAGE_COLUMNS], use_threads=False)
        images = {c: _images(table, c, self.height, self.width) for c in IMAGE_COLUMNS}
        return images, table.column("id").to_pylist(), table.column("is_real").to_pylist()

    def _sample(self, images: dict[str, np.ndarray], sample_id: str,
                is_real: bool) -> dict[str, Any]:
        m, t, r = images["mixture"], images["transmission"], images["reflection"]
        if self._transform is not None:
            out = self._transform(image=m, transmission=t, reflection=r)
            m, t, r = out["image"], out["transmission"], out["reflection"]
        return {"mixture": _to_tensor(m), "transmission": _to_tensor(t),
                "reflection": _to_tensor(r), "is_real": torch.tensor(bool(is_real)),
                "id": sample_id}
