"""Synthesis speed: vectorised chunks (ytmt.data.synthesis) vs a per-image baseline.

The baseline is an independent re-implementation of the YTMT authors' per-image pipeline
(data/sirs_dataset.py + data/transforms.py of mingcv/YTMT-Strategy): PIL bicubic rescale of
both whole photos (short side an even size in [224, 448], both scaled by T's orientation),
PIL flip and crop, float conversion, an 11×11 ``outer(g, g)`` Gaussian applied with
``scipy.signal.convolve2d(mode="same")`` per channel, then the γ = 1.3 overflow rule.

Both run on one core in this process from the same decoded photos. JPEG decoding (two
photos per mixture when every photo is used once, as with VOC) costs both the same and is
reported apart, with the ratio it leaves. Prints ms per mixture and the ratios.

    python bench/bench_synthesis.py [--size 224] [--n 64] [--photos DIR]
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from scipy.signal import convolve2d

from ytmt.data.config import SynthesizeConfig
from ytmt.data.sources import sample_images
from ytmt.data.synthesis import Item, Task, run_task
from ytmt.imageio import decode, read

# ---------------------------------------------------------------- per-image baseline


def _scale_to(img: Image.Image, target: int, by_height: bool) -> Image.Image:
    w, h = img.size
    if by_height:
        nw = math.ceil(int(target * w / h) / 2) * 2
        return img.resize((nw, target), Image.BICUBIC)
    nh = math.ceil(int(target * h / w) / 2) * 2
    return img.resize((target, nh), Image.BICUBIC)


def baseline_one(t_img: Image.Image, r_img: Image.Image, size: int, lo: int, hi: int,
                 rnd: random.Random) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    target = int(rnd.randint(lo, hi) / 2) * 2
    by_height = t_img.size[0] >= t_img.size[1]
    t_img, r_img = _scale_to(t_img, target, by_height), _scale_to(r_img, target, by_height)
    if rnd.random() < 0.5:
        t_img = t_img.transpose(Image.FLIP_LEFT_RIGHT)
        r_img = r_img.transpose(Image.FLIP_LEFT_RIGHT)
    w, h = t_img.size
    i, j = rnd.randint(0, h - size), rnd.randint(0, w - size)
    t_img = t_img.crop((j, i, j + size, i + size))
    r_img = r_img.crop((j, i, j + size, i + size))
    t = np.asarray(t_img, np.float32) / 255.0
    r = np.asarray(r_img, np.float32) / 255.0
    sigma = rnd.uniform(2, 5)
    x = np.arange(11) - 5.0
    g = np.exp(-x * x / (2 * sigma * sigma))
    g = (g / g.sum()).reshape(11, 1)
    k2 = g @ g.T
    r = r.copy()
    for c in range(3):
        r[..., c] = convolve2d(r[..., c], k2, mode="same")
    m = t + r
    if m.max() > 1:
        shift = (m[m > 1].mean() - 1) * 1.3
        r = np.clip(r - shift, 0, 1)
        m = np.clip(t + r, 0, 1)
    return t, r, m


# ---------------------------------------------------------------- harness


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def photos(folder: str | None) -> list[np.ndarray]:
    if folder:
        return [read(p).rgb for p in sorted(Path(folder).iterdir()) if p.is_file()]
    names = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "motorcycle_right")
    return [a for _, a in sample_images(names)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--n", type=int, default=64, help="mixtures per method")
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--photos", default=None, help="folder of photos (default: skimage's)")
    ap.add_argument("--resample", default="opencv", choices=["opencv", "pil"])
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; best is kept")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    imgs = photos(args.photos)
    size, lo, hi = args.size, args.size, 2 * args.size
    print(f"{len(imgs)} photos, {size}x{size} mixtures, short side in [{lo}, {hi}], one core, "
          f"best of {args.rounds}")

    pil = [Image.fromarray(a) for a in imgs]
    rnd = random.Random(0)
    n_base = max(4, args.n // 4)

    def run_baseline() -> None:
        for k in range(n_base):
            baseline_one(pil[k % len(pil)], pil[(k + 1) % len(pil)], size, lo, hi, rnd)

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for k, a in enumerate(imgs):
            p = Path(tmp) / f"{k}.jpg"
            Image.fromarray(a).save(p, quality=95)
            paths.append(str(p))
        cfg = SynthesizeConfig(size=size, scale_min=lo, scale_max=hi, chunk=args.chunk,
                               resample=args.resample)
        items = tuple(Item("synthetic", f"t{k}", paths[k % len(paths)], f"r{k}",
                           paths[(k + 1) % len(paths)], 0) for k in range(args.chunk))
        tasks = [Task("train", c, c * args.chunk, items, 0)
                 for c in range(math.ceil(args.n / args.chunk))]
        n_ours = len(tasks) * args.chunk

        def run_ours() -> None:
            for task in tasks:
                run_task(task, cfg)

        def decode_all() -> None:
            for p in paths:
                decode(Path(p).read_bytes(), str(p))

        run_baseline()
        run_ours()  # warm-up; photos now decoded and cached
        # Rounds alternate the methods so that load from other processes hits all alike.
        base_ms = ours_ms = decode_ms = float("inf")
        for _ in range(args.rounds):
            base_ms = min(base_ms, timed(run_baseline) / n_base * 1e3)
            ours_ms = min(ours_ms, timed(run_ours) / n_ours * 1e3)
            decode_ms = min(decode_ms, timed(decode_all) / len(paths) * 1e3)

    print(f"baseline (per image, authors' method): {base_ms:8.2f} ms / mixture")
    print(f"chunks of {args.chunk} (resample {args.resample}):  {ours_ms:8.2f} ms / mixture")
    print(f"decoding the mixture's two JPEG photos:    {2 * decode_ms:8.2f} ms (same for both)")
    print(f"speed-up per core: {base_ms / ours_ms:.1f}x (target >= 20x); counting two photo "
          f"decodes per mixture in both: "
          f"{(base_ms + 2 * decode_ms) / (ours_ms + 2 * decode_ms):.1f}x")


if __name__ == "__main__":
    main()
