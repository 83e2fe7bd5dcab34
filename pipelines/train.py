"""DVC stage `train@<variant>-<seed>` (and `train2@...`): one training run with Ray Train.

The loss weights found by the tune stage (``--best``: ``best.yaml``, the variants the sweep
searched for and their weights, e.g. ``{variants: [ytmt-ucs], weights: {loss.exclusion:
0.08}}``) override params before validation, for those variants only; every other variant
(another single-stage one, a two-stage run) and a disabled sweep's ``{}`` keep params.yaml's.
Writes ``--out/model.pt`` + ``info.json`` (ytmt.model_store), ``--metrics`` (the run's row
of ``dvc metrics show``) and under ``--plots``: ``val_psnr/<run>.csv``,
``train_loss/<run>.csv`` and ``curves/<run>.png``. Its MLflow run is one run of experiment
``train.experiment``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from ytmt.data.shards import ShardsMissing, shards_for_training
from ytmt.model_store import run_label
from ytmt.params import load_params, replace, run_stage
from ytmt.sweep.records import read_best
from ytmt.train.report import write_run_outputs
from ytmt.train.trainer import train_variant


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--variant", required=True)
    ap.add_argument("--seed", type=int, required=True, help="the run seed (a train.seeds entry)")
    ap.add_argument("--stage1", default=None,
                    help="two-stage variants: the trained stage-1 model.pt of the same seed")
    ap.add_argument("--shards", default="outputs/shards")
    ap.add_argument("--best", default=None, help="tune stage's best.yaml (optional)")
    ap.add_argument("--out", required=True, help="the run's model folder")
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--plots", default="outputs/plots")
    ap.add_argument("--tracking-uri", default=None,
                    help="MLflow URI (default: train.tracking_uri, $MLFLOW_TRACKING_URI, "
                         "sqlite:///<cwd>/mlflow.db)")
    ap.add_argument("--storage", default=None,
                    help="Ray checkpoints (default: train.storage_path, $YTMT_RAY_STORAGE, "
                         "outputs/ray_results); on a cluster s3://bucket/prefix or a shared "
                         "path, required inside `ray job submit`")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    if args.storage:
        params = replace(params, train=dataclasses.replace(params.train,
                                                            storage_path=args.storage))
    overrides, searched = read_best(args.best, args.variant) if args.best else ({}, [])
    if overrides:
        print(f"train: loss weights from {args.best}: {overrides}")
    elif searched:
        print(f"train: {args.best} was searched for {', '.join(searched)}; {args.variant} "
              "keeps params.yaml's loss weights")
    try:
        shards = shards_for_training(args.shards, params.synthesize.publish)
        info = train_variant(params, args.variant, shards, args.out, seed=args.seed,
                             overrides=overrides, tracking_uri=args.tracking_uri,
                             stage1_checkpoint=args.stage1)
    except ShardsMissing as err:  # one line naming the fix, no traceback
        print(f"train: {err}", file=sys.stderr)
        return 1
    label = run_label(args.variant, args.seed)
    write_run_outputs(label, info.history, args.metrics, args.plots)
    m = info.metrics
    print(f"train {label}: val PSNR T {m['val_psnr_t']:.2f} dB (input "
          f"{m['val_psnr_t_input']:.2f}), model {info.model_path}, MLflow {info.model_uri}")
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
