"""Where a trained model stands against the identity baseline on every synthetic split: the
photos it trained on (``train``) and the held-out ones (``val``, ``test``).

Issue 11 §5 asks whether the default recipe can beat the input itself on the test split.
This tells the two limits apart: a model that beats the input on held-out photos only where
it also does on its own training mixtures is short of fit (capacity, steps), one that beats
it on the training mixtures but not on held-out photos is short of data.

    python bench/recipe_splits.py                       # outputs/ of a `dvc repro`
    python bench/recipe_splits.py --model outputs/models/unet-no-fi/seed0/model.pt

Each split's mixtures are scored whole (stored size, no crop, no flip) in fp32 with the
evaluate stage's per-image scoring (paper protocol): mean PSNR/SSIM of T̂ and of the input,
and the share of mixtures where T̂'s SSIM is above the input's.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch


def score_split(model, shards: str, split: str) -> dict[str, float]:
    from ytmt.evaluation.evaluate import iter_synthetic
    from ytmt.inference import separate
    from ytmt.metrics import score_images

    rows = []
    for s in iter_synthetic(shards, split):
        t_hat, r_hat = separate(model, s.mixture, tile=None, precision="fp32")
        sc = score_images(t_hat, r_hat, s.mixture, s.transmission, s.reflection,
                          protocols=("paper",))
        rows.append((sc["psnr_t"], sc["ssim_t"], sc["psnr_t_input"], sc["ssim_t_input"]))
    a = np.asarray(rows)
    return {"mixtures": len(rows), "psnr_t": a[:, 0].mean(), "ssim_t": a[:, 1].mean(),
            "psnr_in": a[:, 2].mean(), "ssim_in": a[:, 3].mean(),
            "ssim_wins": float((a[:, 1] > a[:, 3]).mean())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="outputs/models/ytmt-ucs/seed0/model.pt")
    ap.add_argument("--shards", default="outputs/shards")
    ap.add_argument("--splits", default="train,val,test")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from ytmt.checkpoint import model_from_checkpoint

    model = model_from_checkpoint(args.model)
    print(f"{args.model} on {args.shards} (paper protocol, fp32, whole stored mixtures)")
    for split in args.splits.split(","):
        r = score_split(model, args.shards, split)
        print(f"RESULT {split:5s} {r['mixtures']:4d} mixtures: T̂ {r['psnr_t']:.2f} dB / "
              f"{r['ssim_t']:.3f}, input {r['psnr_in']:.2f} / {r['ssim_in']:.3f}; T̂ above the "
              f"input's SSIM on {r['ssim_wins']:.0%} of them", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
