"""Training reader speed: augmented 224×224 samples per second on one core.

Builds a small shard set (stored 256×256, from scikit-image's photos) in a temp folder,
then times, in this one process:

- ``ShardDataset`` (Parquet row groups, raw uint8 + zstd, albumentations crop+flip on M, T, R,
  float tensors), iterated directly and through a ``DataLoader`` (batch 16, no workers);
- a per-file baseline: the same samples as PNG files (M, T, R per sample, as the authors'
  data sets are stored) decoded by ``ytmt.imageio`` (Pillow), with the same augmentation
  and conversion;
- the training loop's own loader (``ytmt.train.step.SampleBatches`` over
  ``ShardDataset(uint8=True)``, batch 16) with 1, 2 and 4 loader processes: samples/s in
  all and per process (on a machine with fewer cores than processes, the processes share
  them; the per-process figure then falls).

    python bench/bench_reader.py [--n 256] [--size 256] [--crop 224] [--workers 1 2 4]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ytmt.data.config import FetchConfig, SynthesizeConfig
from ytmt.data.reader import ShardDataset, _to_tensor
from ytmt.data.sources import fetch_images
from ytmt.data.synthesis import synthesize_shards
from ytmt.imageio import read
from ytmt.train.step import SampleBatches


def timed(fn, n: int) -> float:
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=256, help="training samples in the set")
    ap.add_argument("--size", type=int, default=256, help="stored size")
    ap.add_argument("--crop", type=int, default=224)
    ap.add_argument("--compression", default="zstd", choices=["zstd", "lz4", "none"])
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; best is kept")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4],
                    help="loader processes of the training loop's loader to time")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fetch_images(FetchConfig(), tmp / "images")
        cfg = SynthesizeConfig(size=args.size, scale_min=args.size, scale_max=2 * args.size,
                               train_mixtures=args.n, val_mixtures=0, test_mixtures=0,
                               val_image_fraction=0.0, test_image_fraction=0.0,
                               compression=args.compression)
        synthesize_shards(tmp / "images", tmp / "shards", cfg, seed=0)
        size_mb = sum(p.stat().st_size for p in (tmp / "shards").rglob("*.parquet")) / 1e6

        ds = ShardDataset(tmp / "shards", "train", crop=args.crop, augment=True, seed=0)
        list(ds)  # warm the page cache
        loader = DataLoader(ds, batch_size=16, num_workers=0)

        # Baseline: one PNG file per image, decoded per sample.
        files = tmp / "png"
        files.mkdir()
        samples = list(ShardDataset(tmp / "shards", "train"))
        for s in samples:
            for key in ("mixture", "transmission", "reflection"):
                arr = (s[key].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                Image.fromarray(arr).save(files / f"{s['id']}_{key}.png")
        aug = A.Compose([A.RandomCrop(args.crop, args.crop), A.HorizontalFlip()],
                        additional_targets={"transmission": "image", "reflection": "image"},
                        seed=0)

        def baseline() -> None:
            for s in samples:
                imgs = {k: read(files / f"{s['id']}_{k}.png").rgb
                        for k in ("mixture", "transmission", "reflection")}
                out = aug(image=imgs["mixture"], transmission=imgs["transmission"],
                          reflection=imgs["reflection"])
                [_to_tensor(out[k]) for k in ("image", "transmission", "reflection")]

        # the training loop's loader: uint8 samples, batches formed in the main process
        ds8 = ShardDataset(tmp / "shards", "train", crop=args.crop, augment=True, seed=0,
                           uint8=True)
        loaders = {w: SampleBatches(ds8, 16, w) for w in args.workers}

        # Rounds alternate the methods so that load from other processes hits all alike.
        base = direct = batched = 0.0
        procs = dict.fromkeys(args.workers, 0.0)
        for _ in range(args.rounds):
            base = max(base, timed(baseline, len(samples)))
            direct = max(direct, timed(lambda: [None for _ in ds], len(ds)))
            batched = max(batched, timed(lambda: [None for _ in loader], len(ds)))
            for w, batches in loaders.items():
                procs[w] = max(procs[w], timed(lambda b=batches: [None for _ in b], len(ds8)))

    print(f"{len(ds)} samples stored at {args.size}x{args.size} ({size_mb:.1f} MB of "
          f"{args.compression} shards), augmented {args.crop}x{args.crop} crops, one core, "
          f"best of {args.rounds}")
    print(f"PNG files per sample (baseline): {base:8.1f} samples/s")
    print(f"ShardDataset, iterated:          {direct:8.1f} samples/s  ({direct / base:.1f}x)")
    print(f"ShardDataset + DataLoader(16):   {batched:8.1f} samples/s  ({batched / base:.1f}x)")
    print(f"per core: {batched:.0f} samples/s (target >= 300)")
    print("training loader (SampleBatches), uint8, batches of 16 collated in the loader "
          f"processes ({os.cpu_count()} cores here):")
    for w, rate in procs.items():
        print(f"  {w} loader process{'es' if w > 1 else '  '}: {rate:8.1f} samples/s, "
              f"{rate / w:8.1f} per process  ({rate / base:.1f}x baseline)")


if __name__ == "__main__":
    main()
