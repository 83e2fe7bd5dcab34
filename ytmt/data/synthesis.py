"""Reflection synthesis into shards: the plan of :mod:`ytmt.data.pairing` (which photos
pair in which split) run in chunks of mixtures made by :mod:`ytmt.data.mixing` (the model
and how it differs from the authors' code), in-process, on a process pool or as Ray tasks,
and written as resumable Parquet parts. Beside the mixtures the set holds the real pairs
(``real_train``, ``real_val``: at their own size, short side at most ``scale_max``) and the
training photo pool (``photos``), from which the reader composes fresh mixtures per epoch
with :func:`run_task`, the same code.

Randomness: split membership of the photos and the per-epoch pairing (the photo list is
reshuffled each epoch and split in halves, T half and R half) are drawn from ``seed`` in the
parent; each chunk of ``chunk`` mixtures draws its geometry, σ and γ from
``(seed, split, chunk index)`` (and the training epoch, for the reader's fresh mixtures of
epochs > 0). So the shards are byte-identical for a seed whatever the number of workers or
the backend (local processes or Ray tasks).
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import os
import shutil
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import PIL
import pyarrow as pa
from PIL import Image

from ytmt import imageio
from ytmt.data import mixing, pairing, shards, sources
from ytmt.data.config import SynthesizeConfig
from ytmt.data.layout import PairFiles
from ytmt.data.mixing import Photo, compose, rescaled_crop, rescaled_shape
from ytmt.data.pairing import (
    Item,
    Task,
    check_real_pairs,
    chunk_tasks,
    plan,
    split_photos,
    split_real_pairs,
)
from ytmt.data.shards import (
    MANIFEST,
    PHOTO_SCHEMA,
    PHOTOS,
    REAL_SCHEMA,
    SPLITS,
    Batch,
    PartWriter,
    part_fingerprint,
    part_name,
    raw_images,
    write_manifest,
)
from ytmt.data.sources import read_index
from ytmt.fileio import file_digest
from ytmt.progress import Progress

# --------------------------------------------------------------------------- one chunk


_SHIPPED: dict[str, bytes] = {}  # encoded photos sent with a Ray task, by path


@lru_cache(maxsize=64)
def _photo(path: str) -> Photo:
    """A decoded RGB photo (cached per process: small pools are reused across chunks)."""
    data = _SHIPPED.get(path)
    return Photo.of((imageio.decode(data, path) if data is not None else imageio.read(path)).rgb)


def even_scales(u: np.ndarray, scale_min: int, scale_max: int) -> np.ndarray:
    """Even short sides drawn uniformly from ``[scale_min, scale_max]`` for ``u`` in [0, 1);
    ValueError when the range holds no even size (the config refuses such a range)."""
    lo, hi = math.ceil(scale_min / 2), scale_max // 2
    if lo > hi:
        raise ValueError(f"no even short side in [{scale_min}, {scale_max}]")
    return 2 * (lo + np.minimum((u * (hi - lo + 1)).astype(int), hi - lo))


def run_task(task: Task, cfg: SynthesizeConfig,
             load: Callable[[str], Photo] = _photo) -> Batch:
    """Synthesise one chunk: load photos (``load(path)``), draw geometry/σ/γ, crop, compose.
    Deterministic: the draws come from ``(seed, split, chunk)`` and, for ``task.draw`` > 0
    (a training epoch's fresh mixtures), that epoch."""
    split_index = SPLITS.index(task.split)
    key = [task.seed, 3, split_index, task.chunk] + ([task.draw] if task.draw else [])
    rng = np.random.default_rng(key)
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
        t_img, r_img = load(item.t_path), load(item.r_path)
        s = int(scales[i])
        (ht, wt), (hr, wr) = (rescaled_shape(*im.array.shape[:2], s) for im in (t_img, r_img))
        ys[i] = int(u[i, 1] * (min(ht, hr) - size + 1))
        xs[i] = int(u[i, 2] * (min(wt, wr) - size + 1))
        tc = rescaled_crop(t_img, s, ys[i], xs[i], size, cfg.resample)
        rc = rescaled_crop(r_img, s, ys[i], xs[i], size, cfg.resample)
        t[i], r[i] = (cv2.flip(tc, 1), cv2.flip(rc, 1)) if flips[i] else (tc, rc)
    mix, _, refl, m = compose(t, r, sigmas, gammas, cfg.kernel_size)
    meta = {
        "id": [f"{task.split}-{task.first_row + i:06d}" for i in range(n)],
        "split": [task.split] * n,
        "source": [it.kind for it in task.items],
        "is_real": [False] * n,
        "t_id": [it.t_id for it in task.items],
        "r_id": [it.r_id for it in task.items],
        "epoch": [it.epoch for it in task.items],
        "height": [size] * n, "width": [size] * n,
        "scale": scales.tolist(), "flip": flips.tolist(),
        "crop_y": ys.tolist(), "crop_x": xs.tolist(),
        "kernel_size": [cfg.kernel_size] * n,
        "sigma": sigmas.tolist(), "gamma": gammas.tolist(),
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
    or as Ray tasks (``backend: ray``); results come back in task order.

    At most two tasks per worker are in flight, so finished chunks never pile up while the
    caller writes: ``Pool.imap`` submits every task at once, and on 2 cores, where the
    writer shares the CPUs with the workers, the parent's memory then grew with the number
    of mixtures (569 MiB at 523 mixtures, 2,596 MiB at 8,407; bench/bench_scale.py)."""
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
        pending: deque = deque()
        for task in tasks:
            pending.append(pool.apply_async(fn, (task,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


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


def _code_identity() -> list[str]:
    """What turns photos into the shards' bytes besides the settings: the source of this
    module, of the plan (:mod:`ytmt.data.pairing`), of the model (:mod:`ytmt.data.mixing`),
    of the shard writer, of the fetch index (:mod:`ytmt.data.sources`) and of the image
    decoder (:mod:`ytmt.imageio`), and the versions of the libraries doing the pixel and
    Parquet work."""
    modules = (sys.modules[__name__], pairing, mixing, shards, sources, imageio)
    code = [file_digest(m.__file__) for m in modules]
    return code + [f"{lib.__name__} {lib.__version__}" for lib in (np, cv2, PIL, pa)]


def fingerprint(cfg: SynthesizeConfig, seed: int, entries: list[dict[str, Any]],
                real_pairs: Sequence[PairFiles], real_val: int = 0) -> str:
    """Hash of everything that determines the shards' bytes (not the worker layout): the
    settings, the seed, the inputs' names and contents (SHA-256 of every file, about
    1 GB/s here: 7 ms for the default photos, seconds for VOC) and the code
    (:func:`_code_identity`). Parts of an interrupted run are kept only when it matches."""
    settings = synthesis_settings(cfg)
    photos = [(e["id"], e["file"], file_digest(e["path"])) for e in entries]
    reals = [(p.name, file_digest(p.blended), file_digest(p.transmission))
             for p in real_pairs]
    blob = json.dumps([settings, seed, photos, reals, real_val, _code_identity()],
                      sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _prepare_parts(out: Path, plans: dict[str, list[Item]], cfg: SynthesizeConfig, seed: int,
                   fp: str) -> tuple[dict[str, list[dict[str, Any]]],
                                     list[tuple[str, int, list[Task]]], int]:
    """Every split's part entries for the manifest, the parts still to write as
    ``(split, part index, tasks)`` and how many finished parts (same fingerprint) are kept.
    Leftovers (temp files, parts of another layout) and stale parts are deleted."""
    rows_per_part = max(1, int(cfg.shard_mb * 1e6 // (9 * cfg.size * cfg.size)) // cfg.chunk)
    rows_per_part *= cfg.chunk
    work: list[tuple[str, int, list[Task]]] = []
    parts: dict[str, list[dict[str, Any]]] = {}
    resumed = 0
    for split in SPLITS:
        items = plans[split]
        n_parts = math.ceil(len(items) / rows_per_part)
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        wanted = {part_name(p) for p in range(n_parts)}
        for stale in folder.iterdir():
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
            tasks = chunk_tasks(split, items, cfg.chunk, seed)
            work.append((split, p, tasks[lo // cfg.chunk:math.ceil(hi / cfg.chunk)]))
    return parts, work, resumed


def _write_parts(out: Path, work: list[tuple[str, int, list[Task]]], cfg: SynthesizeConfig,
                 fp: str) -> tuple[int, Counter]:
    """Synthesise and write the parts of ``work`` (with progress); returns the rows written
    and the counts of synthetic and overflowed mixtures."""
    all_tasks = [t for _, _, tasks in work for t in tasks]
    todo_rows = sum(len(t.items) for t in all_tasks)
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
    return todo_rows, stats


def _bounded_pair(pair: PairFiles, max_short: int) -> tuple[np.ndarray, np.ndarray]:
    """A real pair's I and T as ``(H, W, 3) uint8`` of one size: T resized (bicubic) to I's
    size if they differ, both shrunk (area) so that the short side is at most ``max_short``
    (the largest rescale the training transform draws, so nothing it could use is lost)."""
    blended = imageio.read(pair.blended).rgb
    trans = imageio.read(pair.transmission).rgb
    h, w = blended.shape[:2]
    if trans.shape[:2] != (h, w):
        trans = np.asarray(Image.fromarray(trans).resize((w, h), Image.BICUBIC))
    if min(h, w) > max_short:
        h1, w1 = rescaled_shape(h, w, max_short)
        blended, trans = (cv2.resize(im, (w1, h1), interpolation=cv2.INTER_AREA)
                          for im in (blended, trans))
    return blended, trans


def _write_single_part(out: Path, split: str, table: pa.Table, fp: str,
                       cfg: SynthesizeConfig, compression: str) -> list[dict[str, Any]]:
    """``table`` as ``out/split/part-00000.parquet`` (one row group; the folder's other files
    removed); the manifest entries of the split."""
    folder = out / split
    if folder.is_dir():
        shutil.rmtree(folder)
    if len(table) == 0:
        folder.mkdir(parents=True)
        return []
    writer = PartWriter(folder / part_name(0), fp, compression, cfg.compression_level,
                        schema=table.schema)
    try:
        writer.write(table)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return [{"file": part_name(0), "rows": len(table), "row_groups": [len(table)]}]


def _real_table(pairs: Sequence[PairFiles], split: str, max_short: int) -> pa.Table:
    images = [_bounded_pair(p, max_short) for p in pairs]
    return pa.table({
        "id": [f"{split}-{i:06d}" for i in range(len(pairs))],
        "name": [p.name for p in pairs],
        "height": [im[0].shape[0] for im in images],
        "width": [im[0].shape[1] for im in images],
        "blended": raw_images([im[0] for im in images]),
        "transmission": raw_images([im[1] for im in images]),
    }, schema=REAL_SCHEMA)


def _photo_table(photos: list[dict[str, Any]]) -> pa.Table:
    """The training photo pool in the plan's order, each photo's file bytes as they are."""
    return pa.table({"id": [e["id"] for e in photos], "path": [str(e["path"]) for e in photos],
                     "data": [Path(e["path"]).read_bytes() for e in photos]},
                    schema=PHOTO_SCHEMA)


def _write_real_and_photos(out: Path, real_pairs: Sequence[PairFiles], real_val: int,
                           photos: list[dict[str, Any]], cfg: SynthesizeConfig,
                           fp: str) -> dict[str, list[dict[str, Any]]]:
    """The ``real_train``, ``real_val`` and ``photos`` splits (rewritten every run: a few
    seconds); their manifest entries."""
    train, val = split_real_pairs(real_pairs, real_val)
    parts = {}
    for split, pairs in (("real_train", train), ("real_val", val)):
        parts[split] = _write_single_part(out, split, _real_table(pairs, split, cfg.scale_max),
                                          fp, cfg, cfg.compression)
    # JPEG/PNG bytes do not compress: stored plainly
    parts[PHOTOS] = _write_single_part(out, PHOTOS, _photo_table(photos), fp, cfg, "none")
    return parts


def synthesis_settings(cfg: SynthesizeConfig) -> dict[str, Any]:
    """The settings that determine the mixtures' bytes (not the worker layout), as the
    manifest records them for the reader's fresh mixtures."""
    return {k: v for k, v in asdict(cfg).items()
            if k not in ("workers", "backend", "ray_address", "publish")}


def synthesize_shards(images: str | Path, out: str | Path, cfg: SynthesizeConfig, seed: int,
                      real_pairs: Sequence[PairFiles] = (), real_val: int = 0) -> dict[str, Any]:
    """Write train / val / test shards of ``images`` to ``out``, the real pairs as
    ``real_train`` / ``real_val`` (``real_val``: :func:`ytmt.data.pairing.real_val_pair`)
    and the training photos as ``photos``.

    Finished mixture parts of an earlier, interrupted run with the same :func:`fingerprint`
    are kept; the manifest is written last. Returns the metrics dict."""
    t0 = time.monotonic()
    out = Path(out)
    entries = read_index(images)
    real_ok, real_skipped = check_real_pairs(real_pairs, 1)
    fp = fingerprint(cfg, seed, entries, real_ok, real_val)
    plans = plan(entries, cfg, seed)
    pools = split_photos(entries, cfg, seed)
    (out / MANIFEST).unlink(missing_ok=True)
    parts, work, resumed = _prepare_parts(out, plans, cfg, seed, fp)
    if resumed:
        print(f"synthesize: keeping {resumed} finished part(s) of an earlier run", flush=True)
    todo_rows, stats = _write_parts(out, work, cfg, fp)
    parts.update(_write_real_and_photos(out, real_ok, real_val, pools["train"], cfg, fp))
    manifest = write_manifest(out, fp, parts, {"size": [cfg.size, cfg.size], "seed": seed,
                                               "synthesis": synthesis_settings(cfg),
                                               "real_val_every": real_val})
    seconds = time.monotonic() - t0
    splits = (*SPLITS, "real_train", "real_val", PHOTOS)
    return {
        "splits": {s: {"rows": manifest["splits"][s]["rows"],
                       "parts": len(manifest["splits"][s]["parts"]),
                       "bytes": sum(p["bytes"] for p in manifest["splits"][s]["parts"])}
                   for s in splits},
        "photos": {s: len(pools[s]) for s in SPLITS},
        "real_pairs": {"found": len(real_pairs), "used": len(real_ok),
                       "train": manifest["splits"]["real_train"]["rows"],
                       "val": manifest["splits"]["real_val"]["rows"],
                       "skipped": sum(real_skipped.values()),
                       "skipped_by_reason": dict(real_skipped)},
        "overflow_fraction": stats["overflowed"] / max(1, stats["synthetic"]),
        "size": cfg.size, "backend": cfg.backend,
        "workers": _worker_count(cfg) if cfg.backend == "local" else None,
        "resumed_parts": resumed, "written_rows": todo_rows,
        "seconds": round(seconds, 3), "rows_per_s": round(todo_rows / max(seconds, 1e-9), 2),
    }
