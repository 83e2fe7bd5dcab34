"""DVC stage ``tune``: sweep the loss weights with Ray Tune and write the best ones.

    python pipelines/tune.py --params params.yaml --shards outputs/shards --out outputs/tune

Writes ``<out>/best.yaml`` (the variant searched for and the winner's dotted loss keys →
values; ``{}`` when ``tune.enabled`` is false), ``<out>/trials.csv``, ``<out>/spread.json``
(the trials' spread against the winner's over two run seeds) and ``<out>/summary.json``.
Re-running an interrupted sweep resumes it from ``tune.storage_path``; ``--fresh`` starts
over. On a Ray cluster::

    ray job submit --address http://<head>:8265 --working-dir . -- \\
        python pipelines/tune.py --params params.yaml --shards /shared/shards --out /shared/tune \\
        --storage /shared/tune_runs --tracking-uri http://<mlflow-host>:5000

(see docs/sweeps.md).
"""

from __future__ import annotations

import argparse
import sys

from ytmt.config import ConfigError
from ytmt.data.shards import ShardsMissing, shards_for_training
from ytmt.params import load_params, run_stage
from ytmt.sweep.records import SweepError, SweepInterrupted, write_disabled
from ytmt.tracking import TrackingUnavailable


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--shards", default="outputs/shards")
    parser.add_argument("--out", default="outputs/tune")
    parser.add_argument("--storage", default=None,
                        help="Ray Tune storage (default: tune.storage_path, $YTMT_TUNE_STORAGE, "
                             "outputs/tune_runs); shared storage on a cluster")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: tune.tracking_uri, "
                             "$MLFLOW_TRACKING_URI, sqlite:///<cwd>/mlflow.db)")
    parser.add_argument("--fresh", action="store_true",
                        help="discard an interrupted run of the same sweep instead of resuming")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
        if not params.tune.enabled:  # Ray not even imported: a second or two
            print(f"tune: tune.enabled is false; wrote {write_disabled(args.out)}")
            return 0
        from ytmt.sweep.run import run_sweep  # imports Ray Tune (seconds)

        shards = shards_for_training(args.shards, params.synthesize.publish)
        run_sweep(params, shards, args.out, tracking_uri=args.tracking_uri,
                  storage_path=args.storage, fresh=args.fresh)
    except ConfigError as err:
        print(f"tune: invalid configuration: {err}", file=sys.stderr)
        return 2
    except SweepInterrupted as err:
        print(f"tune: {err}", file=sys.stderr)
        return 130
    except (SweepError, TrackingUnavailable) as err:
        print(f"tune: {err}", file=sys.stderr)
        return 1
    except ShardsMissing as err:
        print(f"tune: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
