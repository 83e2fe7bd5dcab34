"""DVC stage `evaluate`: score every trained run of params `train` (variants × seeds and the
two-stage runs; params `evaluate`) on the synthetic test split and on the benchmarks the data
manifest lists; report in --out, one `dvc metrics` row per run and set under --metrics."""

from __future__ import annotations

import argparse
import sys

from ytmt.evaluation.evaluate import run_evaluation
from ytmt.params import load_params, run_stage


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--models", default="outputs/models")
    ap.add_argument("--shards", default="outputs/shards")
    ap.add_argument("--manifest", default="outputs/data_manifest.json")
    ap.add_argument("--out", default="outputs/eval")
    ap.add_argument("--metrics", default="outputs/metrics/eval",
                    help="folder: <set>/<variant>-seed<k>.json")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    summary = run_evaluation(params.evaluate, args.models, args.shards, args.manifest,
                             args.out, args.metrics, tracking_uri=params.train.tracking_uri,
                             runs=params.train.runs())
    present = [s["name"] for s in summary["sets"] if s["present"]]
    absent = [s["name"] for s in summary["sets"] if not s["present"]]
    print(f"evaluate: {len(summary['models'])} model(s) on {', '.join(present) or 'no set'}"
          + (f"; absent: {', '.join(absent)}" if absent else "") + f" -> {args.out}/report.md")
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
