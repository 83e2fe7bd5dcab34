"""Reflection synthesis (CEILNet model as the YTMT authors run it), vectorised, into shards.

Per mixture (design.md s2): a transmission photo T and a reflection photo R get the same
random rescale (short side an even size in [scale_min, scale_max]), the same horizontal flip
and the same ``size``×``size`` crop; in [0, 1] floats R is blurred with a ``kernel_size``²
Gaussian (σ ~ U(sigma_min, sigma_max), the normalised separable kernel ``g gᵀ``, zero
padding, "same" output: exactly a 2-D convolution with ``outer(g, g)``); ``M = T + R``;
if ``max(M) > 1``: ``m = (mean(M[M > 1]) − 1)·γ``, ``R = clip(R − m, 0, 1)``,
``M = clip(T + R)``.
Targets are T and the adjusted R.

Differences from the authors' per-image code, all deliberate:

- The geometry is computed in the source photo's coordinates and only the crop box is
  resampled (not the whole rescaled photo). ``resample: pil`` runs PIL's antialiased bicubic
  over the exact box, the same pixels as the authors' rescale-then-crop; ``resample: opencv``
  (default, ~8× faster) snaps the box to whole source pixels and uses OpenCV bicubic (area
  averaging when shrinking more than 2×).
- Each photo is rescaled by its own short side (the authors scale R by T's orientation,
  which can leave R narrower than the crop); the crop is drawn inside both rescaled photos.
- The blur is OpenCV's separable filter (two 11-tap passes, constant-0 border), equal to the
  authors' ``convolve2d(outer(g, g), mode="same")`` up to float rounding; a chunk's scalar
  work (σ, γ, geometry) is drawn at once and per-image work stays in the CPU cache.
- Stored values are bytes: R is rounded to uint8 after the overflow rule and the mixture is
  ``M = min(T + R, 255)`` in integers, so ``M == clip(T + R)`` holds exactly in the shards.

Randomness: split membership of the photos and the per-epoch pairing (the photo list is
reshuffled each epoch and split in halves, T half and R half) are drawn from ``seed`` in the
parent; each chunk of ``chunk`` mixtures draws its geometry, σ and γ from
``(seed, split, chunk index)``. So the shards are byte-identical for a seed whatever the
number of workers or the backend (local processes or Ray tasks).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import multiprocessing as mp
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from ytmt.data.config import SynthesizeConfig
from ytmt.data.layout import PairFiles
from ytmt.data.progress import Progress
from ytmt.data.shards import (
    MANIFEST,
    SPLITS,
    Batch,
    PartWriter,
    part_fingerprint,
    part_name,
    write_manifest,
)
from ytmt.data.sources import BadImage, load_rgb, read_index

# --------------------------------------------------------------------------- the model


def gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """``(size,) float64`` Gaussian taps ``exp(−x²/2σ²)``, x centred, normalised to sum 1."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def blur(images: np.ndarray, sigmas: np.ndarray, size: int) -> np.ndarray:
    """Gaussian blur of ``(N, H, W, C) float32`` with one σ per image.

    Equivalent to ``scipy.signal.convolve2d(channel, outer(g, g), mode="same")`` (zero
    padding) per image and channel: OpenCV's separable filter with a constant-0 border."""
    out = np.empty(images.shape, np.float32)
    for i, (img, s) in enumerate(zip(images, sigmas, strict=True)):
        out[i] = _blur_one(img, float(s), size)
    return out


def _blur_one(img: np.ndarray, sigma: float, size: int) -> np.ndarray:
    g = gaussian_kernel(size, sigma).astype(np.float32)
    out = cv2.sepFilter2D(img, cv2.CV_32F, g, g, borderType=cv2.BORDER_CONSTANT)
    return out.reshape(img.shape)


def overflow_shift(t: np.ndarray, r: np.ndarray, gamma: float) -> float:
    """``m = (mean(M[M > 1]) − 1)·γ`` for ``M = t + r`` (float32 images in [0, 1]); 0 when
    ``max(M) <= 1``. Computed as ``sum(max(M − 1, 0)) / #(M > 1) · γ``."""
    excess = np.add(t, r)
    excess -= 1.0
    count = np.count_nonzero(excess > 0)
    if count == 0:
        return 0.0
    np.maximum(excess, 0.0, out=excess)
    return float(excess.sum(dtype=np.float64) / count * gamma)


def compose(t: np.ndarray, r: np.ndarray, sigmas: np.ndarray, gammas: np.ndarray,
            kernel_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Synthesise a chunk from aligned crops ``t``, ``r``: ``(N, H, W, 3) uint8``.

    Per image (whole-array operations, which stay in the CPU cache): blur R, the overflow
    rule (``R ← clip(R − m, 0, 1)``), R rounded to bytes, then ``M = min(T + R, 255)``.
    Returns ``(M, T, R, m)``: ``(N, H, W, 3) uint8`` each and the per-image shift ``m``
    (float32, 0 where nothing overflowed)."""
    n = len(t)
    mix, refl = np.empty_like(t), np.empty_like(t)
    shifts = np.zeros(n, np.float32)
    scale = np.float32(1 / 255)
    tf = np.empty(t.shape[1:], np.float32)
    rf = np.empty(t.shape[1:], np.float32)
    for i in range(n):
        np.multiply(r[i], scale, out=rf)
        rb = _blur_one(rf, float(sigmas[i]), kernel_size)
        np.multiply(t[i], scale, out=tf)
        m = overflow_shift(tf, rb, float(gammas[i]))
        if m:
            rb -= np.float32(m)
            np.maximum(rb, 0.0, out=rb)
        shifts[i] = m
        # x·255 rounded half-to-even and saturated to [0, 255] (rb >= 0 here), then the
        # saturating byte sum: M = min(T + R, 255).
        refl[i] = cv2.convertScaleAbs(rb, alpha=255.0).reshape(rb.shape)
        mix[i] = cv2.add(t[i], refl[i]).reshape(rb.shape)
    return mix, t, refl, shifts


def rescaled_shape(height: int, width: int, scale: int) -> tuple[int, int]:
    """Size after rescaling the short side to ``scale``; the long side rounded up to even."""
    short, long = min(height, width), max(height, width)
    other = math.ceil(int(scale * long / short) / 2) * 2
    return (scale, other) if height <= width else (other, scale)


def rescaled_crop(photo: Photo, scale: int, y: int, x: int, size: int,
                  resample: str = "opencv") -> np.ndarray:
    """The ``size``² crop at ``(y, x)`` of ``photo`` rescaled to short side ``scale``, as
    ``(size, size, 3) uint8``. Only the crop box is resampled.

    ``pil``: PIL's antialiased bicubic over the exact (fractional) box, as the authors
    (rescale the whole photo, then crop). ``opencv``: the box snapped to whole source pixels
    (scale within half a pixel over the crop), OpenCV bicubic, or area averaging when
    shrinking by more than 2× (whole k×k blocks first); about 8× faster, within 35-50 dB
    PSNR of ``pil``."""
    h, w = photo.array.shape[:2]
    h1, w1 = rescaled_shape(h, w, scale)
    sy, sx = h / h1, w / w1
    if resample == "pil":
        box = (x * sx, y * sy, (x + size) * sx, (y + size) * sy)
        return np.asarray(photo.image.resize((size, size), Image.BICUBIC, box=box))
    # A large shrink first averages k×k pixel blocks (OpenCV's fast integer area path).
    k = max(1, int(min(size * sy, size * sx) // (2 * size)))
    bh, bw = max(k, min(h, round(size * sy / k) * k)), max(k, min(w, round(size * sx / k) * k))
    y0, x0 = min(round(y * sy), h - bh), min(round(x * sx), w - bw)
    region = photo.array[y0:y0 + bh, x0:x0 + bw]
    if k > 1:
        region = cv2.resize(region, (bw // k, bh // k), interpolation=cv2.INTER_AREA)
    shrink = region.shape[0] > 2 * size or region.shape[1] > 2 * size
    return cv2.resize(region, (size, size),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Photo:
    """A decoded photo as both an ``(H, W, 3) uint8`` array and a PIL image (no copies)."""

    array: np.ndarray
    image: Image.Image

    @classmethod
    def of(cls, array: np.ndarray) -> Photo:
        array.setflags(write=False)
        return cls(array, Image.fromarray(array))


@dataclass(frozen=True)
class Item:
    """One row to synthesise: a synthetic pair (T photo, R photo) or a real pair (I, T)."""

    kind: str  # "synthetic" | "real"
    t_id: str
    t_path: str
    r_id: str | None  # None for real pairs
    r_path: str  # the R photo, or the real pair's blended image I
    epoch: int


@dataclass(frozen=True)
class Task:
    split: str
    chunk: int  # chunk index within the split
    first_row: int
    items: tuple[Item, ...]
    seed: int


def split_photos(entries: list[dict[str, Any]], cfg: SynthesizeConfig,
                 seed: int) -> dict[str, list[dict[str, Any]]]:
    """Disjoint photo pools for train / val / test (val and test hold out fractions of the
    photos, at least 2 each when they have mixtures)."""
    entries = sorted(entries, key=lambda e: e["id"])
    order = np.random.default_rng([seed, 0]).permutation(len(entries))
    shuffled = [entries[i] for i in order]

    def held(frac: float, n_mix: int) -> int:
        return 0 if n_mix == 0 else max(2, round(frac * len(entries)))

    n_val = held(cfg.val_image_fraction, cfg.val_mixtures)
    n_test = held(cfg.test_image_fraction, cfg.test_mixtures)
    if len(entries) - n_val - n_test < 2:
        raise ValueError(f"{len(entries)} photos cannot give val {n_val} + test {n_test} "
                         "held-out photos and at least 2 training photos; fetch more photos "
                         "or set val_mixtures / test_mixtures to 0")
    return {"val": shuffled[:n_val], "test": shuffled[n_val:n_val + n_test],
            "train": shuffled[n_val + n_test:]}


def pair_epochs(photos: list[dict[str, Any]], n: int, rng: np.random.Generator) -> list[Item]:
    """``n`` synthetic items: each epoch reshuffles ``photos`` and pairs the T half with the
    R half, until ``n`` mixtures are planned. ValueError when ``n > 0`` and fewer than 2
    photos are given (no pair exists)."""
    if n > 0 and len(photos) < 2:
        raise ValueError(f"{len(photos)} photo(s) cannot give {n} mixtures: pairing a "
                         "transmission with a reflection needs at least 2")
    half = len(photos) // 2
    items: list[Item] = []
    epoch = 0
    while len(items) < n:
        perm = rng.permutation(len(photos))
        for k in range(min(half, n - len(items))):
            t, r = photos[perm[k]], photos[perm[half + k]]
            items.append(Item("synthetic", t["id"], t["path"], r["id"], r["path"], epoch))
        epoch += 1
    return items


def check_real_pairs(pairs: Sequence[PairFiles], min_side: int) -> tuple[list[PairFiles],
                                                                          Counter]:
    """Real pairs whose two images decode (bad ones counted by reason, not fatal)."""
    good, skipped = [], Counter()
    for p in pairs:
        try:
            load_rgb(p.blended, min_side)
            load_rgb(p.transmission, min_side)
        except BadImage as err:
            skipped[err.reason] += 1
            continue
        good.append(p)
    return good, skipped


def plan(entries: list[dict[str, Any]], real_pairs: Sequence[PairFiles],
         cfg: SynthesizeConfig, seed: int) -> dict[str, list[Item]]:
    """Every split's rows in order (real pairs scattered at seeded positions in train)."""
    pools = split_photos(entries, cfg, seed)
    counts = {"train": cfg.train_mixtures, "val": cfg.val_mixtures, "test": cfg.test_mixtures}
    plans = {}
    for i, split in enumerate(SPLITS):
        plans[split] = pair_epochs(pools[split], counts[split],
                                   np.random.default_rng([seed, 1, i]))
    real = [Item("real", p.name, str(p.transmission), None, str(p.blended), copy)
            for copy in range(cfg.real_copies) for p in real_pairs]
    if real:
        train = plans["train"]
        total = len(train) + len(real)
        where = set(np.random.default_rng([seed, 2]).choice(total, len(real), replace=False)
                    .tolist())
        synth, reals, merged = iter(train), iter(real), []
        for pos in range(total):
            merged.append(next(reals) if pos in where else next(synth))
        plans["train"] = merged
    return plans


# --------------------------------------------------------------------------- one chunk


_SHIPPED: dict[str, bytes] = {}  # encoded photos sent with a Ray task, by path


@lru_cache(maxsize=64)
def _photo(path: str) -> Photo:
    """A decoded RGB photo (cached per process: small pools are reused across chunks)."""
    data = _SHIPPED.get(path)
    return Photo.of(load_rgb(io.BytesIO(data) if data is not None else path)[0])


def _fit(photo: Photo, shape: tuple[int, int]) -> Photo:
    if photo.array.shape[:2] == shape:
        return photo
    return Photo.of(np.asarray(photo.image.resize((shape[1], shape[0]), Image.BICUBIC)))


def even_scales(u: np.ndarray, scale_min: int, scale_max: int) -> np.ndarray:
    """Even short sides drawn uniformly from ``[scale_min, scale_max]`` for ``u`` in [0, 1);
    ValueError when the range holds no even size (the config refuses such a range)."""
    lo, hi = math.ceil(scale_min / 2), scale_max // 2
    if lo > hi:
        raise ValueError(f"no even short side in [{scale_min}, {scale_max}]")
    return 2 * (lo + np.minimum((u * (hi - lo + 1)).astype(int), hi - lo))


def run_task(task: Task, cfg: SynthesizeConfig) -> Batch:
    """Synthesise one chunk: load photos, draw geometry/σ/γ, crop, compose. Deterministic."""
    split_index = SPLITS.index(task.split)
    rng = np.random.default_rng([task.seed, 3, split_index, task.chunk])
    n, size = len(task.items), cfg.size
    u = rng.random((n, 6))
    scales = even_scales(u[:, 0], cfg.scale_min, cfg.scale_max)
    flips = u[:, 3] < cfg.flip_p
    sigmas = cfg.sigma_min + u[:, 4] * (cfg.sigma_max - cfg.sigma_min)
    gammas = cfg.gamma_min + u[:, 5] * (cfg.gamma_max - cfg.gamma_min)
    t = np.empty((n, size, size, 3), np.uint8)
    r = np.empty_like(t)
    ys, xs = np.zeros(n, int), np.zeros(n, int)
    for i, item in enumerate(task.items):
        t_img, r_img = _photo(item.t_path), _photo(item.r_path)
        if item.kind == "real":  # r_img is the blended photo I; T must match its size
            t_img = _fit(t_img, r_img.array.shape[:2])
        s = int(scales[i])
        (ht, wt), (hr, wr) = (rescaled_shape(*im.array.shape[:2], s) for im in (t_img, r_img))
        ys[i] = int(u[i, 1] * (min(ht, hr) - size + 1))
        xs[i] = int(u[i, 2] * (min(wt, wr) - size + 1))
        tc = rescaled_crop(t_img, s, ys[i], xs[i], size, cfg.resample)
        rc = rescaled_crop(r_img, s, ys[i], xs[i], size, cfg.resample)
        t[i], r[i] = (cv2.flip(tc, 1), cv2.flip(rc, 1)) if flips[i] else (tc, rc)
    real = np.array([it.kind == "real" for it in task.items])
    if not real.any():
        mix, _, refl, m = compose(t, r, sigmas, gammas, cfg.kernel_size)
    else:
        mix, refl = np.empty_like(t), np.empty_like(t)
        m = np.zeros(n, np.float32)
        syn = ~real
        if syn.any():
            mix[syn], _, refl[syn], m[syn] = compose(t[syn], r[syn], sigmas[syn],
                                                     gammas[syn], cfg.kernel_size)
        mix[real] = r[real]  # r holds the real mixture I: R = clip(I − T, 0, 1)
        refl[real] = np.maximum(r[real], t[real]) - t[real]
    meta = {
        "id": [f"{task.split}-{task.first_row + i:06d}" for i in range(n)],
        "split": [task.split] * n,
        "source": ["real" if x else "synthetic" for x in real],
        "is_real": real.tolist(),
        "t_id": [it.t_id for it in task.items],
        "r_id": [it.r_id for it in task.items],
        "epoch": [it.epoch for it in task.items],
        "height": [size] * n, "width": [size] * n,
        "scale": scales.tolist(), "flip": flips.tolist(),
        "crop_y": ys.tolist(), "crop_x": xs.tolist(),
        "kernel_size": np.where(real, 0, cfg.kernel_size).tolist(),
        "sigma": np.where(real, 0.0, sigmas).tolist(),
        "gamma": np.where(real, 0.0, gammas).tolist(),
        "overflow": m.tolist(),
    }
    return Batch(mix, t, refl, meta)


# --------------------------------------------------------------------------- executors


def _worker_count(cfg: SynthesizeConfig) -> int:
    if cfg.workers:
        return cfg.workers
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one task per core: no nested thread pools


def map_tasks(tasks: list[Task], cfg: SynthesizeConfig) -> Iterator[Batch]:
    """Run ``tasks`` in order: in-process, on a local process pool (every core by default)
    or as Ray tasks (``backend: ray``); results come back in task order."""
    fn = partial(run_task, cfg=cfg)
    if cfg.backend == "ray":
        yield from _map_ray(tasks, cfg)
        return
    workers = min(_worker_count(cfg), len(tasks))
    if workers <= 1:
        yield from map(fn, tasks)
        return
    # fork (Linux): workers inherit the imported modules (spawn re-imports torch via ytmt,
    # ~2 s per worker); they only run numpy/OpenCV/PIL code on their own data.
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    with mp.get_context(method).Pool(workers, initializer=_init_worker) as pool:
        yield from pool.imap(fn, tasks, chunksize=1)


def _task_paths(task: Task) -> list[str]:
    return sorted({p for it in task.items for p in (it.t_path, it.r_path)})


def _run_task_ray(task: Task, cfg: SynthesizeConfig, *photos: bytes) -> Batch:
    """A Ray task: ``photos`` are the encoded files of ``_task_paths(task)``, resolved by Ray
    from the object store, so workers on other nodes need no shared file system."""
    _init_worker()
    _SHIPPED.update(zip(_task_paths(task), photos, strict=True))
    try:
        return run_task(task, cfg)
    finally:
        _SHIPPED.clear()


def _map_ray(tasks: list[Task], cfg: SynthesizeConfig) -> Iterator[Batch]:
    """Ray remote tasks, at most 2 per cluster CPU in flight. Each photo file is put in the
    object store once (by the driver) and handed to the tasks that use it."""
    import ray

    from ytmt.ray_local import init_ray

    started = init_ray(cfg.ray_address, num_cpus=_worker_count(cfg))
    try:
        remote = ray.remote(num_cpus=1)(_run_task_ray)
        window = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        pending, refs = [], {}
        for task in tasks:
            paths = _task_paths(task)
            for p in paths:
                if p not in refs:
                    refs[p] = ray.put(Path(p).read_bytes())
            pending.append(remote.remote(task, cfg, *(refs[p] for p in paths)))
            if len(pending) >= window:
                yield ray.get(pending.pop(0))
        while pending:
            yield ray.get(pending.pop(0))
    finally:
        if started:
            ray.shutdown()


# --------------------------------------------------------------------------- the stage


def fingerprint(cfg: SynthesizeConfig, seed: int, entries: list[dict[str, Any]],
                real_pairs: Sequence[PairFiles]) -> str:
    """Hash of everything that determines the shards' bytes (not the worker layout): the
    settings, the seed, the inputs' names and sizes, and this code."""
    settings = {k: v for k, v in asdict(cfg).items()
                if k not in ("workers", "backend", "ray_address")}
    code = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    photos = [(e["id"], e["file"], os.path.getsize(e["path"])) for e in entries]
    reals = [(p.name, p.blended.stat().st_size, p.transmission.stat().st_size)
             for p in real_pairs]
    blob = json.dumps([settings, seed, photos, reals, code], sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def synthesize_shards(images: str | Path, out: str | Path, cfg: SynthesizeConfig, seed: int,
                      real_pairs: Sequence[PairFiles] = ()) -> dict[str, Any]:
    """Write train / val / test shards of ``images`` (+ real pairs) to ``out``.

    Finished parts of an earlier, interrupted run with the same fingerprint are kept; the
    manifest is written last. Returns the metrics dict."""
    t0 = time.monotonic()
    out = Path(out)
    entries = read_index(images)
    real_ok, real_skipped = check_real_pairs(real_pairs, 1)
    fp = fingerprint(cfg, seed, entries, real_ok)
    plans = plan(entries, real_ok, cfg, seed)
    (out / MANIFEST).unlink(missing_ok=True)
    rows_per_part = max(1, int(cfg.shard_mb * 1e6 // (9 * cfg.size * cfg.size)) // cfg.chunk)
    rows_per_part *= cfg.chunk

    work: list[tuple[str, int, list[Task]]] = []  # (split, part index, tasks) still to write
    parts: dict[str, list[dict[str, Any]]] = {}
    resumed = 0
    for split in SPLITS:
        items = plans[split]
        n_parts = math.ceil(len(items) / rows_per_part)
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        wanted = {part_name(p) for p in range(n_parts)}
        for stale in folder.iterdir():  # leftovers: temp files, parts of another layout
            if stale.name not in wanted:
                stale.unlink()
        parts[split] = []
        for p in range(n_parts):
            lo, hi = p * rows_per_part, min(len(items), (p + 1) * rows_per_part)
            path = folder / part_name(p)
            groups = [min(cfg.chunk, hi - s) for s in range(lo, hi, cfg.chunk)]
            parts[split].append({"file": path.name, "rows": hi - lo, "row_groups": groups})
            if path.is_file() and part_fingerprint(path) == fp:
                resumed += 1
                continue
            path.unlink(missing_ok=True)
            tasks = [Task(split, s // cfg.chunk, s, tuple(items[s:s + cfg.chunk]), seed)
                     for s in range(lo, hi, cfg.chunk)]
            work.append((split, p, tasks))

    all_tasks = [t for _, _, tasks in work for t in tasks]
    todo_rows = sum(len(t.items) for t in all_tasks)
    if resumed:
        print(f"synthesize: keeping {resumed} finished part(s) of an earlier run", flush=True)
    prog = Progress("synthesize", todo_rows)
    stats: Counter = Counter()
    results = map_tasks(all_tasks, cfg)
    for split, p, tasks in work:
        writer = PartWriter(out / split / part_name(p), fp, cfg.compression,
                            cfg.compression_level)
        try:
            for _ in tasks:
                batch = next(results)
                writer.write(batch)
                syn = [not x for x in batch.meta["is_real"]]
                stats["synthetic"] += sum(syn)
                stats["overflowed"] += sum(
                    1 for s, m in zip(syn, batch.meta["overflow"], strict=True) if s and m > 0)
                prog.update(len(batch))
        except BaseException:
            writer.abort()
            raise
        writer.close()
    if todo_rows:
        prog.close()

    manifest = write_manifest(out, fp, parts, {"size": [cfg.size, cfg.size], "seed": seed})
    seconds = time.monotonic() - t0
    pools = split_photos(entries, cfg, seed)
    return {
        "splits": {s: {"rows": manifest["splits"][s]["rows"],
                       "real": sum(it.kind == "real" for it in plans[s]),
                       "parts": len(manifest["splits"][s]["parts"]),
                       "bytes": sum(p["bytes"] for p in manifest["splits"][s]["parts"])}
                   for s in SPLITS},
        "photos": {s: len(pools[s]) for s in SPLITS},
        "real_pairs": {"found": len(real_pairs), "used": len(real_ok),
                       "skipped": sum(real_skipped.values()),
                       "skipped_by_reason": dict(real_skipped)},
        "overflow_fraction": stats["overflowed"] / max(1, stats["synthetic"]),
        "size": cfg.size, "backend": cfg.backend,
        "workers": _worker_count(cfg) if cfg.backend == "local" else None,
        "resumed_parts": resumed, "written_rows": todo_rows,
        "seconds": round(seconds, 3), "rows_per_s": round(todo_rows / max(seconds, 1e-9), 2),
    }
