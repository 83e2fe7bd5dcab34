"""Reflection synthesis into shards: the plan of :mod:`ytmt.data.pairing` (which photos
pair in which split) run in chunks of mixtures made by :mod:`ytmt.data.mixing` (the model
and how it differs from the authors' code), in-process, on a process pool or as Ray tasks,
and written as resumable Parquet parts.

Randomness: split membership of the photos and the per-epoch pairing (the photo list is
reshuffled each epoch and split in halves, T half and R half) are drawn from ``seed`` in the
parent; each chunk of ``chunk`` mixtures draws its geometry, σ and γ from
``(seed, split, chunk index)``. So the shards are byte-identical for a seed whatever the
number of workers or the backend (local processes or Ray tasks).
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import os
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
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
from ytmt.data.pairing import Item, Task, check_real_pairs, plan, split_photos
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
from ytmt.data.sources import read_index

# --------------------------------------------------------------------------- one chunk


_SHIPPED: dict[str, bytes] = {}  # encoded photos sent with a Ray task, by path


@lru_cache(maxsize=64)
def _photo(path: str) -> Photo:
    """A decoded RGB photo (cached per process: small pools are reused across chunks)."""
    data = _SHIPPED.get(path)
    return Photo.of((imageio.decode(data, path) if data is not None else imageio.read(path)).rgb)


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


def _file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _code_identity() -> list[str]:
    """What turns photos into the shards' bytes besides the settings: the source of this
    module, of the plan (:mod:`ytmt.data.pairing`), of the model (:mod:`ytmt.data.mixing`),
    of the shard writer, of the fetch index (:mod:`ytmt.data.sources`) and of the image
    decoder (:mod:`ytmt.imageio`), and the versions of the libraries doing the pixel and
    Parquet work."""
    modules = (sys.modules[__name__], pairing, mixing, shards, sources, imageio)
    code = [_file_digest(m.__file__) for m in modules]
    return code + [f"{lib.__name__} {lib.__version__}" for lib in (np, cv2, PIL, pa)]


def fingerprint(cfg: SynthesizeConfig, seed: int, entries: list[dict[str, Any]],
                real_pairs: Sequence[PairFiles]) -> str:
    """Hash of everything that determines the shards' bytes (not the worker layout): the
    settings, the seed, the inputs' names and contents (SHA-256 of every file, about
    1 GB/s here: 7 ms for the default photos, seconds for VOC) and the code
    (:func:`_code_identity`). Parts of an interrupted run are kept only when it matches."""
    settings = {k: v for k, v in asdict(cfg).items()
                if k not in ("workers", "backend", "ray_address")}
    photos = [(e["id"], e["file"], _file_digest(e["path"])) for e in entries]
    reals = [(p.name, _file_digest(p.blended), _file_digest(p.transmission))
             for p in real_pairs]
    blob = json.dumps([settings, seed, photos, reals, _code_identity()], sort_keys=True,
                      default=list)
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
            work.append((split, p, [Task(split, s // cfg.chunk, s,
                                         tuple(items[s:s + cfg.chunk]), seed)
                                    for s in range(lo, hi, cfg.chunk)]))
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


def synthesize_shards(images: str | Path, out: str | Path, cfg: SynthesizeConfig, seed: int,
                      real_pairs: Sequence[PairFiles] = ()) -> dict[str, Any]:
    """Write train / val / test shards of ``images`` (+ real pairs) to ``out``.

    Finished parts of an earlier, interrupted run with the same :func:`fingerprint` are kept;
    the manifest is written last. Returns the metrics dict."""
    t0 = time.monotonic()
    out = Path(out)
    entries = read_index(images)
    real_ok, real_skipped = check_real_pairs(real_pairs, 1)
    fp = fingerprint(cfg, seed, entries, real_ok)
    plans = plan(entries, real_ok, cfg, seed)
    (out / MANIFEST).unlink(missing_ok=True)
    parts, work, resumed = _prepare_parts(out, plans, cfg, seed, fp)
    if resumed:
        print(f"synthesize: keeping {resumed} finished part(s) of an earlier run", flush=True)
    todo_rows, stats = _write_parts(out, work, cfg, fp)
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
