"""The authors' data mix at CPU scale, measured on real photographs with reflections.

Needs the development data in ``../shared/data`` (``real_train``: Zhang et al.'s 89 real
pairs; ``voc100``: 100 PASCAL VOC photos); without it the script says so and exits 0. Nothing
from there is written into the repository: the shards and models go under ``--out``
(default ``outputs/bench/real_pairs``, git-ignored), every trained model folder is kept
(``<config>/seed<k>/model.pt`` + ``info.json``, scoreable again with ``--score``).

Data: ``voc100`` photos (10 % held out for the synthetic val split) + the real pairs, of which
``data.real_val: 9`` holds out ids ≡ 0 mod 9 (18, 27, ..., 108: 11 pairs) as the real
validation split; they are never trained on. Shards: the default synthesis (96 px stored,
short side in [96, 192]), real pairs stored with short side 192.

Runs (``comparisons``): ``train.real_share`` 0 / 0.3 × ``train.mixtures`` stored / fresh ×
run seeds, each the same number of optimiser steps, in-process (num_workers 0, 2 threads),
the default model and loss (width 8, random VGG) at batch 4, crop 48. Reported: T̂ PSNR/SSIM
(paper protocol) of the final model on the held-out real pairs (their stored size, aligned to
16) and on the synthetic val split, beside the identity (T̂ = input).

``default``: the default offline recipe (params.yaml as is: scikit-image photos, no real
pairs, 18 epochs) trained the same way for the default pipeline's two variants; their
scores on the same held-out real pairs (what the default pipeline's champion does to real
photos).

    python bench/bench_real_pairs.py                    # comparisons, seeds 0 1
    python bench/bench_real_pairs.py --part default
    python bench/bench_real_pairs.py --score outputs/bench/real_pairs/share0.3-fresh/seed0
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
METRICS = ("psnr_t", "ssim_t", "psnr_t_input", "ssim_t_input")


def shared_data() -> tuple[Path, Path] | None:
    voc, real = SHARED / "voc100", SHARED / "real_train"
    return (voc, real) if voc.is_dir() and (real / "blended").is_dir() else None


def make_shards(out: Path, photos: str | None, real: Path | None, seed: int = 0) -> Path:
    """Fetch ``photos`` (a folder; None: scikit-image's samples) and synthesise the default
    shards with ``real`` pairs (held out by data.real_val 9) into ``out``."""
    from ytmt.data.config import FetchConfig, SynthesizeConfig
    from ytmt.data.layout import find_pairs
    from ytmt.data.sources import fetch_images
    from ytmt.data.synthesis import synthesize_shards

    if (out / "shards" / "manifest.json").is_file():
        return out / "shards"
    fetch = FetchConfig(source="folder", folder=photos) if photos else FetchConfig()
    fetch_images(fetch, out / "images")
    synthesize_shards(out / "images", out / "shards", SynthesizeConfig(workers=1), seed,
                      find_pairs(real) if real else [], real_val=9)
    return out / "shards"


def params_for(epochs: int, steps: int, milestone: int, **train) -> dict:
    """params.yaml's default recipe, in-process, with ``train`` overrides."""
    import yaml

    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["train"].update(num_workers=0, batch_size=4, epochs=epochs, max_steps_per_epoch=steps,
                         lr_milestones=[milestone], torch_threads=1, log_every_steps=10_000,
                         **train)
    return data


def train_one(params: dict, variant: str, shards: Path, target: Path, seed: int,
              tracking: str) -> dict:
    """Train (or reuse a finished) run; its final-epoch validation metrics and seconds."""
    from ytmt.model_store import read_info
    from ytmt.params import resolve_params
    from ytmt.train.trainer import train_variant

    if not (target / "info.json").is_file():
        t0 = time.perf_counter()
        info = train_variant(resolve_params(params), variant, shards, target, seed=seed,
                             tracking_uri=tracking)
        (target / "seconds.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
    info = read_info(target)
    return {**info.metrics, "seconds": float((target / "seconds.txt").read_text())}


def score(model_dir: Path, shards: Path) -> dict[str, float]:
    """The model of ``model_dir`` on the shards' held-out real pairs (``val_real_*``)."""
    from torch.utils.data import DataLoader

    from ytmt.checkpoint import model_from_checkpoint
    from ytmt.data.reader import ShardDataset
    from ytmt.train.validation import REAL_PREFIX, validate

    model = model_from_checkpoint(model_dir / "model.pt")
    loader = DataLoader(ShardDataset(shards, "real_val"), batch_size=1)
    sums, _ = validate(model, loader, torch.device("cpu"), 0, prefix=REAL_PREFIX)
    n = sums.pop("n")
    return {k: v / n for k, v in sums.items()}


def mean_std(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.2f} ± {sd:.2f}"


def table(rows: dict[str, list[dict]]) -> str:
    head = ("| config | real val T̂ PSNR | (input) | real val T̂ SSIM | (input) | synthetic val "
            "T̂ PSNR | (input) | beats input on real (PSNR), per seed | s/run |")
    lines = [head, "|" + " --- |" * 9]
    for name, runs in rows.items():
        real = [r["val_real_psnr_t"] for r in runs]
        real_in = [r["val_real_psnr_t_input"] for r in runs]
        lines.append(
            f"| {name} | {mean_std(real)} | {mean_std(real_in)} | "
            f"{mean_std([r['val_real_ssim_t'] for r in runs]).replace(' ± ', '±')} | "
            f"{statistics.fmean(r['val_real_ssim_t_input'] for r in runs):.4f} | "
            f"{mean_std([r['val_psnr_t'] for r in runs])} | "
            f"{statistics.fmean(r['val_psnr_t_input'] for r in runs):.2f} | "
            f"{' '.join('yes' if a > b else 'no' for a, b in zip(real, real_in, strict=True))}"
            f" | {statistics.fmean(r['seconds'] for r in runs):.0f} |")
    return "\n".join(lines)


def comparisons(args, out: Path, voc: Path, real: Path) -> None:
    """Every config for seed 0 first, then for the next seed (the authors' mix first), the
    table rewritten after each run (a cut-short bench keeps what finished)."""
    shards = make_shards(out / "voc100", str(voc), real)
    tracking = f"sqlite:///{out / 'mlflow.db'}"
    configs = [(share, mixtures) for share in args.shares for mixtures in args.mixtures]
    rows: dict[str, list[dict]] = {f"share{s}-{m}": [] for s, m in configs}
    for seed in args.seeds:
        for share, mixtures in configs:
            name = f"share{share}-{mixtures}"
            params = params_for(args.epochs, args.steps, args.milestone, real_share=share,
                                mixtures=mixtures, crop=args.crop)
            params["model"]["width"] = args.width
            target = out / name / f"seed{seed}"
            if args.collect and not (target / "info.json").is_file():
                continue
            m = train_one(params, "ytmt-ucs", shards, target, seed, tracking)
            rows[name].append(m)
            print(f"{name} seed {seed}: real val T̂ {m['val_real_psnr_t']:.2f} dB "
                  f"(input {m['val_real_psnr_t_input']:.2f}), synthetic val "
                  f"{m['val_psnr_t']:.2f} (input {m['val_psnr_t_input']:.2f}), "
                  f"{m['seconds']:.0f} s", flush=True)
            done = {k: v for k, v in rows.items() if v}
            report = (f"{args.epochs} epochs x {args.steps} steps x batch 4, crop {args.crop}, "
                      f"width {args.width}, ytmt-ucs, seeds {args.seeds}\n\n{table(done)}\n")
            tag = "-".join(map(str, args.seeds))
            (out / f"comparisons-seeds{tag}.md").write_text(report)
            (out / f"comparisons-seeds{tag}.json").write_text(json.dumps(rows, indent=2))
    print(report)


def default_champion(args, out: Path, voc: Path, real: Path) -> None:
    """The default recipe on the default data; scored on the held-out real pairs."""
    real_shards = make_shards(out / "voc100", str(voc), real)
    shards = make_shards(out / "default", None, None)
    tracking = f"sqlite:///{out / 'mlflow.db'}"
    rows = {}
    for variant in ("ytmt-ucs", "unet-no-fi"):
        params = params_for(18, 64, 14)  # the default: 256 mixtures / global batch 4
        target = out / "default" / variant / "seed0"
        m = train_one(params, variant, shards, target, 0, tracking)
        rows[variant] = {"val_psnr_t": m["val_psnr_t"], **score(target, real_shards),
                         "seconds": m["seconds"]}
        print(variant, json.dumps(rows[variant]), flush=True)
    champion = max(rows, key=lambda v: rows[v]["val_psnr_t"])
    text = "\n".join(
        f"{v}{' (champion: best val_psnr_t)' if v == champion else ''}: synthetic val T̂ "
        f"{r['val_psnr_t']:.2f} dB; held-out real pairs T̂ {r['val_real_psnr_t']:.2f} dB / "
        f"{r['val_real_ssim_t']:.4f} against the input's {r['val_real_psnr_t_input']:.2f} / "
        f"{r['val_real_ssim_t_input']:.4f} ({r['seconds']:.0f} s)" for v, r in rows.items())
    (out / "default.md").write_text(text + "\n")
    print(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench" / "real_pairs")
    ap.add_argument("--part", choices=("comparisons", "default", "all"), default="comparisons")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--shares", type=float, nargs="+", default=[0.3, 0.0])
    ap.add_argument("--mixtures", nargs="+", default=["fresh", "stored"])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=24, help="optimiser steps per epoch")
    ap.add_argument("--milestone", type=int, default=4)
    ap.add_argument("--crop", type=int, default=48)
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--score", type=Path, help="score this model folder on the real pairs")
    ap.add_argument("--collect", action="store_true",
                    help="train nothing: tabulate the finished runs of the grid")
    args = ap.parse_args(argv)
    data = shared_data()
    if data is None:
        print(f"skipped: {SHARED} (real_train, voc100) is absent; this benchmark needs the "
              "development data of ../shared/data")
        return 0
    torch.set_num_threads(1)  # 1: two OpenMP threads stall on a shared, oversubscribed CPU
    if args.score:
        print(json.dumps(score(args.score, args.out / "voc100" / "shards"), indent=2))
        return 0
    if args.part in ("comparisons", "all"):
        comparisons(args, args.out, *data)
    if args.part in ("default", "all"):
        default_champion(args, args.out, *data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
