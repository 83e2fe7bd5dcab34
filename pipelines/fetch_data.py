"""DVC stage `fetch_data`: fetch the benchmark sets named in params `data.download.sets` into
`data.root` (nothing by default: offline) and write the record of what is there to --out.

Only the `data` section is validated: the whole of params.yaml would import torch (training
variants), and with the default empty list this stage must stay a sub-second no-op."""

from __future__ import annotations

import argparse
import json
import sys

from ytmt.config import load_yaml, parse_section
from ytmt.data.config import DataConfig
from ytmt.data.datasets import fetch_sets, folders_of, summary
from ytmt.data.download import DownloadError
from ytmt.fileio import atomic_write_text
from ytmt.params import run_stage


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="outputs/fetched_data.json")
    args = ap.parse_args(argv)
    data = parse_section(DataConfig, load_yaml(args.params).get("data"), "data")
    try:
        record = fetch_sets(data.download, data.root, folders_of(data))
    except (DownloadError, FileNotFoundError, ValueError) as err:
        print(f"error: fetch_data: {err}", file=sys.stderr)
        return 1
    atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")
    for line in summary(record):
        print(f"fetch_data {line}")
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
