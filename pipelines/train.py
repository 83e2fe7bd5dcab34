"""DVC stage `train`: train every `train.variants` entry for every `train.seeds` entry with Ray
Train, each (variant, seed) its own MLflow run.

The loss weights found by the tune stage (``--best``, a YAML mapping of dotted keys such as
``loss.perceptual: 0.08``; ``{}`` keeps params.yaml's) override params before validation.
Writes ``--out/<variant>/model.pt`` + ``info.json`` (one seed) or
``--out/<variant>/seed<k>/model.pt`` + ``info.json`` (several seeds), ``--metrics`` (JSON keyed
by ``<variant>`` or ``<variant>_seed<k>``) and ``--plots`` (``<same key>.csv`` / ``.png``).
"""

from __future__ import annotations

import argparse
import sys

from ytmt.params import load_params, run_stage
from ytmt.train.report import write_stage_outputs
from ytmt.train.trainer import read_overrides, run_label, train_variants


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--shards", default="outputs/shards")
    ap.add_argument("--best", default=None, help="tune stage's best.yaml (optional)")
    ap.add_argument("--out", default="outputs/models")
    ap.add_argument("--metrics", default="outputs/metrics/train.json")
    ap.add_argument("--plots", default="outputs/plots/train")
    ap.add_argument("--tracking-uri", default=None,
                    help="MLflow URI (default: train.tracking_uri, $MLFLOW_TRACKING_URI, "
                         "sqlite:///<cwd>/mlflow.db)")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    overrides = read_overrides(args.best) if args.best else {}
    if overrides:
        print(f"train: loss weights from {args.best}: {overrides}")
    results = train_variants(params, args.shards, args.out, overrides=overrides,
                             tracking_uri=args.tracking_uri)
    several = len({seed for _, seed in results}) > 1
    labels = {key: run_label(*key, several) for key in results}
    write_stage_outputs({labels[k]: r.history for k, r in results.items()}, args.metrics,
                        args.plots)
    for k, r in results.items():
        print(f"train {labels[k]}: val PSNR T {r.metrics['val_psnr_t']:.2f} dB "
              f"(input {r.metrics['val_psnr_t_input']:.2f}), model {r.model_path}, "
              f"MLflow {r.model_uri}")
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
