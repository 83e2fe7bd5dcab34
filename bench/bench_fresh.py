"""Fresh mixtures per epoch: what each way of getting them costs, at the paper's geometry.

The authors draw new mixtures every epoch (3,821 VOC pairs + 89 real pairs = 3,910 samples
per epoch, 120 epochs). Two ways to do that here:

- ``fresh`` (chosen): the shards store the training photos once; the reader composes each
  epoch's mixtures with the synthesize stage's code (:func:`ytmt.data.synthesis.run_task`).
- ``stored epochs``: the synthesize stage writes one pairing epoch per training epoch
  (120 × 3,910 mixtures) and the reader reads them.

This measures, on ``../shared/data/voc100`` (skipped with the reason when absent), 1/16 of
an epoch (245 mixtures at 224 px, short side in [224, 448]): bytes per stored mixture,
synthesis seconds per mixture (one process), and the reader's samples/s (one process,
224 crops, iterated) from stored rows and composed fresh; then extrapolates to the paper's
120 epochs.

    python bench/bench_fresh.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VOC = ROOT.parent / "shared" / "data" / "voc100"
PAPER_EPOCH, PAPER_EPOCHS, VOC_TRAIN_PHOTOS = 3910, 120, 7643
N = PAPER_EPOCH // 16  # 1/16 of an epoch


def rate(ds, epochs: int = 2) -> float:
    """Samples per second over ``epochs`` passes (epochs 1.. : fresh draws, not epoch 0)."""
    n, t0 = 0, time.perf_counter()
    for e in range(1, epochs + 1):
        ds.set_epoch(e)
        for _ in ds:
            n += 1
    return n / (time.perf_counter() - t0)


def main() -> int:
    if not VOC.is_dir():
        print(f"skipped: {VOC} is absent; this benchmark needs ../shared/data/voc100")
        return 0
    import cv2

    from ytmt.data.config import FetchConfig, SynthesizeConfig
    from ytmt.data.reader import ShardDataset
    from ytmt.data.sources import fetch_images
    from ytmt.data.synthesis import synthesize_shards

    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory(prefix="ytmt-fresh-") as tmp:
        tmp = Path(tmp)
        fetch_images(FetchConfig(source="folder", folder=str(VOC)), tmp / "images")
        cfg = SynthesizeConfig(size=224, scale_min=224, scale_max=448, train_mixtures=N,
                               val_mixtures=2, test_mixtures=0, val_image_fraction=0.03,
                               workers=1)
        t0 = time.perf_counter()
        metrics = synthesize_shards(tmp / "images", tmp / "shards", cfg, 0)
        synth_s = (time.perf_counter() - t0) / N
        bytes_mix = metrics["splits"]["train"]["bytes"] / N
        photos = metrics["splits"]["photos"]
        bytes_photo = photos["bytes"] / photos["rows"]
        stored = rate(ShardDataset(tmp / "shards", "train", crop=224, augment=True))
        fresh = rate(ShardDataset(tmp / "shards", "train", crop=224, augment=True,
                                  mixtures="fresh"))
    total = PAPER_EPOCH * PAPER_EPOCHS
    print(f"1/16 of an epoch ({N} mixtures at 224 px from {photos['rows']} VOC photos), "
          "one process:")
    print(f"  stored mixture: {bytes_mix / 1e3:.0f} kB; synthesis {synth_s * 1e3:.1f} ms each")
    print(f"  reader, stored rows: {stored:.0f} samples/s; fresh (composed): {fresh:.0f} "
          f"samples/s ({stored / fresh:.1f}x slower)")
    print(f"paper, {PAPER_EPOCHS} epochs x {PAPER_EPOCH} samples ({total:,}):")
    print(f"  stored epochs: {total * bytes_mix / 1e9:.0f} GB of shards, "
          f"{total * synth_s / 3600:.1f} CPU-hours of synthesis, read at {stored:.0f}/s "
          "per reader process")
    print(f"  fresh: {VOC_TRAIN_PHOTOS * bytes_photo / 1e9:.2f} GB of photos stored once + "
          f"one epoch's {PAPER_EPOCH * bytes_mix / 1e9:.1f} GB; composing costs "
          f"{1 / fresh * 1e3:.1f} ms per sample in the reader ({fresh:.0f}/s per process)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
