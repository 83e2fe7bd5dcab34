"""Paper Figure 3: YTMT-UCS's training loss falls faster than the same dual-stream U-Net
without feature interaction (``unet-no-fi``).

Both variants are trained by the project's training loop (in-process, ``num_workers=0``)
with the same budget (epochs × steps × batch), the same data order and the same seeds; each
training is an MLflow child run under one parent run, which also gets the plot. Per seed the
script compares the mean training loss over the epochs (the area under the curve: a curve
that falls faster has the smaller area) and the last epoch's loss, and prints whether YTMT
wins in every seed.

    python bench/bench_fig3.py                          # 3 seeds, tiny CPU budget
    python bench/bench_fig3.py --seeds 0 1 2 3 4 --epochs 10 --width 16 --crop 64

Shards: ``--shards`` (default outputs/shards); when absent, a small set is synthesized from
scikit-image's bundled photos into a temporary folder.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

VARIANTS = ("ytmt-ucs", "unet-no-fi")


def tiny_shards(root: Path) -> Path:
    from ytmt.data.config import FetchConfig, SynthesizeConfig
    from ytmt.data.sources import fetch_images
    from ytmt.data.synthesis import synthesize_shards

    fetch_images(FetchConfig(), root / "images")
    cfg = SynthesizeConfig(size=64, scale_min=64, scale_max=128, train_mixtures=128,
                           val_mixtures=8, test_mixtures=4, workers=1, chunk=16)
    synthesize_shards(root / "images", root / "shards", cfg, seed=0)
    return root / "shards"


def train_once(args, variant: str, seed: int, shards: Path, uri: str, run_id: str,
               storage: str) -> list[dict[str, float]]:
    """Train ``variant`` with ``seed``; the per-epoch history (from the final checkpoint)."""
    from ytmt.checkpoint import load_checkpoint
    from ytmt.config import to_dict
    from ytmt.params import load_params, resolve_params
    from ytmt.train.loop import CHECKPOINT_FILE
    from ytmt.train.trainer import build_trainer, make_loop_config

    params = resolve_params(to_dict(load_params(args.params)), {
        "seed": seed, "model.width": args.width, "train.num_workers": 0,
        "train.epochs": args.epochs, "train.max_steps_per_epoch": args.steps,
        "train.batch_size": args.batch, "train.crop": args.crop, "train.lr": args.lr,
        "train.lr_milestones": [args.epochs + 1], "train.gan": False,
        "train.log_every_steps": 10**6, "train.sample_every": args.epochs})
    # in-process: the loop keeps its last checkpoint folder, under one removed here
    with tempfile.TemporaryDirectory(prefix="ytmt-ckpt-") as ckpt_root:
        config = make_loop_config(params, variant, shards, tracking_uri=uri, run_id=run_id,
                                  checkpoint_root=ckpt_root)
        result = build_trainer(config, params.train, f"fig3-{variant}-{seed}", storage).fit()
        with result.checkpoint.as_directory() as d:
            history = load_checkpoint(Path(d) / CHECKPOINT_FILE)["extra"]["history"]
    return history


def plot(curves: dict[tuple[str, int], list[float]], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(6.4, 4))
    colors = {"ytmt-ucs": "tab:red", "unet-no-fi": "tab:blue"}
    labels = {"ytmt-ucs": "YTMT-UCS", "unet-no-fi": "dual-stream U-Net w/o interaction"}
    for (variant, seed), losses in sorted(curves.items()):
        ax.plot(range(1, len(losses) + 1), losses, color=colors[variant], alpha=0.8,
                label=f"{labels[variant]}" if seed == min(s for _, s in curves) else None)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (mean over the epoch)")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--shards", default="outputs/shards")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=16, help="steps per epoch")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--crop", type=int, default=48)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--out", default="outputs/bench/fig3.png")
    ap.add_argument("--tracking-uri", default=None)
    ap.add_argument("--experiment", default="ytmt-fig3")
    args = ap.parse_args(argv)
    if len(args.seeds) < 3:
        ap.error("--seeds: at least 3 seeds (the claim is about every seed)")

    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    from ytmt.tracking import (
        check_tracking_uri,
        client,
        get_or_create_experiment,
        resolve_tracking_uri,
    )

    uri = resolve_tracking_uri(args.tracking_uri)
    check_tracking_uri(uri)
    exp = get_or_create_experiment(uri, args.experiment)
    c = client(uri)
    with tempfile.TemporaryDirectory(prefix="ytmt-fig3-") as tmp:
        shards = Path(args.shards)
        if not (shards / "manifest.json").is_file():
            print(f"{shards}: no shards; synthesizing a small set", flush=True)
            shards = tiny_shards(Path(tmp))
        parent = c.create_run(exp, run_name="fig3", tags={"bench": "fig3"})
        pid = parent.info.run_id
        for k, v in vars(args).items():
            c.log_param(pid, k, str(v))
        curves: dict[tuple[str, int], list[float]] = {}
        for seed in args.seeds:
            for variant in VARIANTS:
                child = c.create_run(exp, run_name=f"{variant}-seed{seed}",
                                     tags={MLFLOW_PARENT_RUN_ID: pid, "variant": variant})
                history = train_once(args, variant, seed, shards, uri, child.info.run_id,
                                     str(Path(tmp) / "ray"))
                c.set_terminated(child.info.run_id)
                curves[variant, seed] = [h["train_loss"] for h in history]
                print(f"seed {seed} {variant:12s} loss per epoch: "
                      + " ".join(f"{x:.4f}" for x in curves[variant, seed]), flush=True)

    wins = []
    for seed in args.seeds:
        ytmt, base = curves["ytmt-ucs", seed], curves["unet-no-fi", seed]
        auc_y, auc_b = sum(ytmt) / len(ytmt), sum(base) / len(base)
        win = auc_y < auc_b and ytmt[-1] < base[-1]
        wins.append(win)
        c.log_metric(pid, "mean_loss_ytmt", auc_y, step=seed)
        c.log_metric(pid, "mean_loss_no_fi", auc_b, step=seed)
        print(f"seed {seed}: mean loss YTMT {auc_y:.4f} vs w/o FI {auc_b:.4f}; last epoch "
              f"{ytmt[-1]:.4f} vs {base[-1]:.4f} -> {'YTMT faster' if win else 'NOT faster'}")
    budget = f"{args.epochs} epochs x {args.steps} steps x {args.batch} images"
    path = plot(curves, Path(args.out), f"Figure 3: training loss, {budget}, "
                f"seeds {args.seeds}, width {args.width}")
    c.log_artifact(pid, str(path), "figures")
    c.set_tag(pid, "ytmt_faster_every_seed", str(all(wins)))
    c.set_terminated(pid)
    print(f"plot: {path}; MLflow run {pid} ({uri})")
    print(f"YTMT's training loss falls faster in every seed: {'YES' if all(wins) else 'NO'} "
          f"({sum(wins)}/{len(wins)} seeds)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
