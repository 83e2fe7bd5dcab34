"""DVC stage `fetch`: collect training photos (params `fetch`) into --out, counts in --metrics."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ytmt.data.sources import fetch_images
from ytmt.params import load_params, run_stage


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="outputs/images")
    ap.add_argument("--metrics", default="outputs/metrics/fetch.json")
    args = ap.parse_args(argv)
    cfg = load_params(args.params).fetch
    metrics = fetch_images(cfg, args.out)
    Path(args.metrics).parent.mkdir(parents=True, exist_ok=True)
    Path(args.metrics).write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"fetch {cfg.source}: {metrics['images']} images "
          f"({metrics['converted']} converted, {metrics['skipped']} skipped) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
