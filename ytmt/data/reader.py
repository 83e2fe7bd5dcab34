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

Real pairs (``real_share``, training only): each sample slot of an epoch is, with
probability ``real_share`` (the authors' ``FusionDataset([synthetic, real], [0.7, 0.3])``),
a real pair of the set's ``real_train`` split instead of its mixture: a pair drawn
uniformly, then the authors' transform afresh (short side rescaled to an even size in the
synthesis' [scale_min, scale_max], the same flip and ``crop``² crop of I and T; only the
crop box is resampled, :func:`ytmt.data.mixing.rescaled_crop`). Its reflection target is
``I − T``, not clipped (the authors' ``target_r = M − B``; it can be negative). Every draw
comes from ``(seed, epoch, rank, slot)``: a restart replays the stream, whatever the number
of DataLoader workers. Without real pairs the share is 0 (said once, by rank 0).

Mixtures (``mixtures``): ``stored`` reads the synthesised rows; ``fresh`` composes epoch
``e``'s mixtures from the set's ``photos`` with :func:`ytmt.data.synthesis.run_task` (the
synthesize stage's code and seed): a new pairing and new geometry, σ, γ every epoch, as the
authors draw them, and epoch 0 equals the stored rows byte for byte.

The ``real_val`` split (validation, ``crop=None``) yields each held-out pair at its stored
size resized to multiples of 16 (:func:`ytmt.metrics.align16`, as the benchmarks), with
``R = I − T``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ytmt.cluster import is_uri
from ytmt.data.config import SynthesizeConfig
from ytmt.data.mixing import Photo, rescaled_crop, rescaled_shape
from ytmt.data.shards import (
    IMAGE_COLUMNS,
    PHOTOS,
    REAL_IMAGE_COLUMNS,
    REAL_SPLITS,
    SPLITS,
    iter_row_groups,
    open_part,
    read_manifest,
)
from ytmt.logs import warn_once

MIXTURE_MODES = ("stored", "fresh")
log = logging.getLogger(__name__)


def check_shards(root: str | Path, splits: tuple[str, ...] = SPLITS) -> None:
    """Raise FileNotFoundError / ValueError with a clear message unless ``root`` holds a
    complete shard set with every split in ``splits``. Reads only the manifest and file sizes."""
    manifest = read_manifest(root)
    missing = [s for s in splits if s not in manifest["splits"]]
    if missing:
        raise ValueError(f"{root}: shard set has no split(s) {missing}; it has "
                         f"{sorted(manifest['splits'])}")


def real_val_rows(root: str | Path) -> int:
    """Rows of the set's ``real_val`` split (0 when the set has none, or no manifest)."""
    try:
        manifest = read_manifest(root)
    except FileNotFoundError:
        return 0
    return int(manifest["splits"].get("real_val", {}).get("rows", 0))


def _offsets(arr: pa.Array) -> np.ndarray:
    """The ``len(arr) + 1`` offsets of a ``binary`` (int32) or ``large_binary`` (int64)
    array, as int64 (a sliced array's offsets start at its ``offset``)."""
    wide = pa.types.is_large_binary(arr.type)
    if not (wide or pa.types.is_binary(arr.type)):
        raise ValueError(f"expected a binary column, got {arr.type}")
    dtype = np.int64 if wide else np.int32
    return np.frombuffer(arr.buffers()[1], dtype, len(arr) + 1,
                         arr.offset * np.dtype(dtype).itemsize).astype(np.int64)


def _rows(column: pa.ChunkedArray) -> list[np.ndarray]:
    """Each row of a binary column as a zero-copy flat ``uint8`` view, chunk by chunk (no
    ``combine_chunks``: a ``binary`` column past 2^31 bytes comes in several chunks)."""
    out = []
    for chunk in column.chunks:
        offsets = _offsets(chunk)
        data = np.frombuffer(chunk.buffers()[2], np.uint8) if len(chunk) else None
        out += [data[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    return out


def _images(table: pa.Table, column: str, height: int, width: int) -> np.ndarray:
    """A binary column of raw RGB bytes as an ``(N, H, W, 3) uint8`` array: a zero-copy view
    when the column is one chunk (int32 or int64 offsets), else one copy."""
    column_data = table.column(column)
    size = height * width * 3
    parts = []
    for chunk in column_data.chunks:
        offsets = _offsets(chunk)
        n = len(chunk)
        if not np.array_equal(np.diff(offsets), np.full(n, size, np.int64)):
            raise ValueError(f"column {column}: rows are not {height}x{width}x3 uint8 images")
        if n:
            parts.append(np.frombuffer(chunk.buffers()[2], np.uint8, n * size, int(offsets[0])))
    data = parts[0] if len(parts) == 1 else np.concatenate(parts or [np.zeros(0, np.uint8)])
    return data.reshape(len(column_data), height, width, 3)


def read_real_pairs(root: str | Path, split: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Every pair of a ``real_train`` / ``real_val`` split as ``(name, I, T)``, each
    ``(H, W, 3) uint8`` at its stored size."""
    manifest = read_manifest(root)
    pairs = []
    for path, index, _ in iter_row_groups(root, split, manifest):
        pairs += _real_group(open_part(path).read_row_group(index, use_threads=False))
    return pairs


def _real_group(table: pa.Table) -> list[tuple[str, np.ndarray, np.ndarray]]:
    shapes = zip(table.column("height").to_pylist(), table.column("width").to_pylist(),
                 strict=True)
    blended, trans = (_rows(table.column(c)) for c in REAL_IMAGE_COLUMNS)
    return [(name, b.reshape(h, w, 3), t.reshape(h, w, 3)) for name, (h, w), b, t in
            zip(table.column("name").to_pylist(), shapes, blended, trans, strict=True)]


def real_transform(blended: Photo, trans: Photo, crop: int, rng: np.random.Generator,
                   cfg: SynthesizeConfig) -> tuple[np.ndarray, np.ndarray]:
    """The authors' paired transform of a real pair, scaled to this set: the short side
    rescaled to an even size in ``[cfg.scale_min, cfg.scale_max]``, the same random
    ``crop``² crop and horizontal flip (``cfg.flip_p``) of I and T. ``(crop, crop, 3) uint8``
    each; the draws come from ``rng``."""
    from ytmt.data.synthesis import even_scales

    u = rng.random(4)
    scale = int(even_scales(u[:1], max(cfg.scale_min, crop), max(cfg.scale_max, crop))[0])
    h, w = rescaled_shape(*blended.array.shape[:2], scale)
    y, x = int(u[1] * (h - crop + 1)), int(u[2] * (w - crop + 1))
    out = [rescaled_crop(p, scale, y, x, crop, cfg.resample) for p in (blended, trans)]
    if u[3] < cfg.flip_p:
        out = [np.ascontiguousarray(im[:, ::-1]) for im in out]
    return out[0], out[1]


UINT8_SCALE = 1.0 / 255.0  # uint8 -> [0, 1]; the training step scales uint8 batches alike


def _to_tensor(img: np.ndarray, uint8: bool = False) -> torch.Tensor:
    """``(H, W, 3) uint8`` -> ``(3, H, W) float32`` in [0, 1] (planar copy in bytes first:
    much cheaper than a strided float conversion); ``uint8``: the planar bytes as they are,
    ``(3, H, W) uint8`` in [0, 255] (a quarter of the bytes to move; the consumer scales by
    :data:`UINT8_SCALE`)."""
    planar = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
    return planar if uint8 else planar.float().mul_(UINT8_SCALE)


class ShardDataset(IterableDataset):
    """Samples of one split as dicts: ``mixture``, ``transmission``, ``reflection`` each
    ``(3, crop, crop) float32`` in [0, 1] (stored size when ``crop`` is None; a real pair's
    reflection ``I − T`` lies in [−1, 1]), ``is_real`` a bool tensor, ``id`` a str. See the
    module docstring for sharding, augmentation, real pairs and fresh mixtures.

    ``shuffle`` (default: same as ``augment``) draws the order from ``(seed, epoch)``;
    otherwise samples come in storage order. ``flip_p``: horizontal flip probability.
    ``real_share``: probability that a ``train`` sample is a real pair (0 without real
    pairs in the set); ``mixtures``: ``stored`` or ``fresh`` (``train`` only).
    ``uint8``: images as bytes for the training loop, which scales them on the device by
    :data:`UINT8_SCALE`: ``mixture`` and ``transmission`` ``(3, H, W) uint8`` in [0, 255],
    ``reflection`` ``(3, H, W) int16`` in [−255, 255] (a real pair's ``I − T`` is negative
    in places)."""

    def __init__(self, root: str | Path, split: str = "train", crop: int | None = None,
                 augment: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1,
                 flip_p: float = 0.5, shuffle_window: int = 128, shuffle: bool | None = None,
                 real_share: float = 0.0, mixtures: str = "stored", uint8: bool = False):
        super().__init__()
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank = {rank}, world_size = {world_size}: need 0 <= rank < "
                             "world_size")
        if not 0.0 <= real_share <= 1.0:
            raise ValueError(f"real_share = {real_share}: must be in [0, 1]")
        if mixtures not in MIXTURE_MODES:
            raise ValueError(f"mixtures = {mixtures!r}: expected one of {MIXTURE_MODES}")
        self.root = root if is_uri(root) else Path(root)  # a folder, or s3://... etc.
        manifest = read_manifest(self.root)
        if split not in manifest["splits"] or split == PHOTOS:
            raise ValueError(f"{self.root}: no split {split!r}; it has "
                             f"{sorted(set(manifest['splits']) - {PHOTOS})}")
        self.height, self.width = manifest["size"]
        if crop is not None and not 1 <= crop <= min(self.height, self.width):
            raise ValueError(f"crop = {crop}: must be in [1, {min(self.height, self.width)}] "
                             f"(stored size {self.height}x{self.width})")
        self.split, self.crop, self.augment = split, crop, augment
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.shuffle = augment if shuffle is None else shuffle
        self.uint8 = uint8
        self.shuffle_window = max(1, shuffle_window)
        self.epoch = 0
        self._groups = list(iter_row_groups(self.root, split, manifest))
        self.num_samples = sum(g[2] for g in self._groups)
        self._transform = self._build_transform(flip_p)
        self._synthesis = SynthesizeConfig(**manifest["synthesis"])
        self._synthesis_seed = int(manifest["seed"])
        self.real_share = self._effective_share(manifest, real_share)
        self.mixtures = mixtures
        if mixtures == "fresh" and split != "train":
            raise ValueError(f"mixtures = 'fresh' is for the train split, not {split!r}")
        if mixtures == "fresh" and not manifest["splits"][PHOTOS]["rows"]:
            raise ValueError(f"{self.root}: mixtures = 'fresh' needs the set's photos split; "
                             "it has none (re-run synthesize)")
        self._loaded: dict[str, Any] = {}  # per process: real pairs, photo bytes, fresh plans

    def _effective_share(self, manifest: dict[str, Any], share: float) -> float:
        """``share`` for the train split when the set has real training pairs; else 0,
        said once (rank 0) when a share was asked for."""
        if self.split != "train" or share == 0.0:
            return 0.0
        if not manifest["splits"].get("real_train", {}).get("rows", 0):
            if self.rank == 0:
                warn_once(log, f"train.real_share = {share}: {self.root} holds no real training "
                          "pairs (data/real_train absent or all held out), so every sample "
                          "is synthetic (real share 0)")
            return 0.0
        return share

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
        """Select the epoch whose order, augmentation, real draws and (``fresh``) mixtures
        are drawn (deterministic)."""
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

    def real_draw(self, slot: int) -> np.random.Generator | None:
        """The generator of slot ``slot`` of this rank's epoch when the slot is a real pair
        (probability ``real_share``), else None. Keyed by (seed, epoch, rank, slot)."""
        if self.real_share == 0.0:
            return None
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, slot, 4])
        return rng if rng.random() < self.real_share else None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        plan = [(g, row, k) for k, (g, row) in enumerate(self.rank_plan())]
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        plan = plan[worker * len(plan) // workers:(worker + 1) * len(plan) // workers]
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker, 1])
        if self._transform is not None:
            self._transform.set_random_seed(
                int(np.random.default_rng([self.seed, self.epoch, self.rank, worker, 2])
                    .integers(2**31)))
        cache: dict[int, Any] = {}
        for start in range(0, len(plan), self.shuffle_window):
            window = plan[start:start + self.shuffle_window]
            draws = {k: self.real_draw(k) for _, _, k in window}
            needed = {g for g, _, k in window if draws[k] is None}
            cache = {g: v for g, v in cache.items() if g in needed}
            for g in needed - cache.keys():
                cache[g] = self._read_group(g)
            if self.shuffle:
                window = [window[i] for i in rng.permutation(len(window))]
            for g, row, k in window:
                if draws[k] is not None:
                    yield self._real_sample(draws[k])
                elif self.split in REAL_SPLITS:
                    name, blended, trans = cache[g][row]
                    yield self._pair_sample(f"{self.split}-{name}", blended, trans)
                else:
                    images, ids, real = cache[g]
                    yield self._sample({k: v[row] for k, v in images.items()}, ids[row],
                                       real[row])

    def _read_group(self, g: int) -> Any:
        path, index, _ = self._groups[g]
        if self.split in REAL_SPLITS:
            return _real_group(open_part(path).read_row_group(index, use_threads=False))
        if self.mixtures == "fresh":
            return self._fresh_group(g)
        table = open_part(path).read_row_group(
            index, columns=["id", "is_real", *IMAGE_COLUMNS], use_threads=False)
        images = {c: _images(table, c, self.height, self.width) for c in IMAGE_COLUMNS}
        return images, table.column("id").to_pylist(), table.column("is_real").to_pylist()

    # ----------------------------------------------------------------- fresh mixtures

    def fresh_tasks(self, epoch: int) -> list:
        """Epoch ``epoch``'s chunks of mixtures (:class:`ytmt.data.pairing.Task`), one per
        row group: the synthesize stage's plan for the train split, drawn for that epoch."""
        from ytmt.data.pairing import chunk_tasks, pair_epochs, pairing_rng

        key = f"tasks-{epoch}"
        if key not in self._loaded:
            self._loaded = {k: v for k, v in self._loaded.items() if not k.startswith("tasks")}
            photos = [{"id": i, "path": p} for i, p in self._photo_data()[1]]
            items = pair_epochs(photos, self.num_samples,
                                pairing_rng(self._synthesis_seed, "train", epoch))
            self._loaded[key] = chunk_tasks("train", items, self._synthesis.chunk,
                                            self._synthesis_seed, epoch)
        return self._loaded[key]

    def _photo_data(self) -> tuple[dict[str, bytes], list[tuple[str, str]]]:
        """The set's training photos: file bytes by path, and ``(id, path)`` in plan order
        (read once per process)."""
        if "photos" not in self._loaded:
            manifest = read_manifest(self.root)
            data: dict[str, bytes] = {}
            order: list[tuple[str, str]] = []
            for path, index, _ in iter_row_groups(self.root, PHOTOS, manifest):
                table = open_part(path).read_row_group(index, use_threads=False)
                for i, p, b in zip(*(table.column(c).to_pylist()
                                     for c in ("id", "path", "data")), strict=True):
                    data[p] = b
                    order.append((i, p))
            self._loaded["photos"] = (data, order)
        return self._loaded["photos"]

    def _fresh_group(self, g: int) -> tuple[dict[str, np.ndarray], list[str], list[bool]]:
        from ytmt import imageio
        from ytmt.data.synthesis import run_task

        data = self._photo_data()[0]
        batch = run_task(self.fresh_tasks(self.epoch)[g], self._synthesis,
                         load=lambda p: Photo.of(imageio.decode(data[p], p).rgb))
        images = {c: getattr(batch, c) for c in IMAGE_COLUMNS}
        return images, batch.meta["id"], batch.meta["is_real"]

    # ----------------------------------------------------------------- real pairs

    def _real_pairs(self) -> list[tuple[str, Photo, Photo]]:
        if "real" not in self._loaded:
            self._loaded["real"] = [(n, Photo.of(b), Photo.of(t))
                                    for n, b, t in read_real_pairs(self.root, "real_train")]
        return self._loaded["real"]

    def _real_sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """A real training pair drawn by ``rng`` with the authors' transform."""
        pairs = self._real_pairs()
        name, blended, trans = pairs[int(rng.integers(len(pairs)))]
        crop = self.crop or min(self.height, self.width)
        m, t = real_transform(blended, trans, crop, rng, self._synthesis)
        return self._pair_sample(f"real_train-{name}", m, t, aligned=True)

    def _pair_sample(self, sample_id: str, blended: np.ndarray, trans: np.ndarray,
                     aligned: bool = False) -> dict[str, Any]:
        """A real pair as a sample: M = I, T, R = I − T (not clipped); a ``real_val`` pair
        resized to multiples of 16 first unless ``aligned``."""
        if not aligned:
            from ytmt.metrics import align16

            blended, trans = align16(blended), align16(trans)
        m, t = _to_tensor(blended, self.uint8), _to_tensor(trans, self.uint8)
        r = m.short() - t.short() if self.uint8 else m - t
        return {"mixture": m, "transmission": t, "reflection": r,
                "is_real": torch.tensor(True), "id": sample_id}

    def _sample(self, images: dict[str, np.ndarray], sample_id: str,
                is_real: bool) -> dict[str, Any]:
        m, t, r = images["mixture"], images["transmission"], images["reflection"]
        if self._transform is not None:
            out = self._transform(image=m, transmission=t, reflection=r)
            m, t, r = out["image"], out["transmission"], out["reflection"]
        r = _to_tensor(r, self.uint8)
        return {"mixture": _to_tensor(m, self.uint8), "transmission": _to_tensor(t, self.uint8),
                "reflection": r.short() if self.uint8 else r,
                "is_real": torch.tensor(bool(is_real)),
                "id": sample_id}
