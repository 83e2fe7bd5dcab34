"""DVC stage `synthesize`: reflection mixtures (+ real pairs) into train/val/test shards."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ytmt.data.manifest import real_pairs
from ytmt.data.shards import publish
from ytmt.data.synthesis import synthesize_shards
from ytmt.params import load_params, run_stage


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--images", default="outputs/images")
    ap.add_argument("--manifest", default="outputs/data_manifest.json")
    ap.add_argument("--out", default="outputs/shards")
    ap.add_argument("--metrics", default="outputs/metrics/synthesize.json")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    metrics = synthesize_shards(args.images, args.out, params.synthesize, params.seed,
                                real_pairs(args.manifest), params.data.real_val)
    if params.synthesize.publish:  # the cluster's copy: parts first, manifest last
        metrics["published"] = publish(args.out, params.synthesize.publish)
        up = metrics["published"]
        print(f"synthesize: uploaded {up['files']} files ({up['bytes'] / 2**20:.1f} MiB) to "
              f"{up['uri']}")
    Path(args.metrics).parent.mkdir(parents=True, exist_ok=True)
    Path(args.metrics).write_text(json.dumps(metrics, indent=2) + "\n")
    rows = {s: v["rows"] for s, v in metrics["splits"].items()}
    real = metrics["real_pairs"]
    print(f"synthesize: {rows} rows ({real['train']} real training pairs, {real['val']} held "
          f"out for validation by data.real_val) in "
          f"{metrics['seconds']:.1f}s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
