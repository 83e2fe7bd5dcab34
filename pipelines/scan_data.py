"""DVC stage `scan` (always runs; cheap): fetch the public benchmark sets that params
`data.download.sets` name into `data.root` (none by default: offline; a set present and
matching datasets.lock.json is not fetched again), then record which external real data under
`data.root` is present: --out (every set, for evaluation) and --real-out (the real training
pairs only: synthesis depends on this file, so a new benchmark set does not re-run synthesis)."""

from __future__ import annotations

import argparse
import sys

from ytmt.data.datasets import fetch_sets, folders_of, summary
from ytmt.data.download import DownloadError
from ytmt.data.manifest import scan, write_manifest
from ytmt.params import load_params, run_stage


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="outputs/data_manifest.json")
    ap.add_argument("--real-out", default="outputs/real_pairs_manifest.json")
    args = ap.parse_args(argv)
    data = load_params(args.params).data
    if data.download.sets:
        try:
            record = fetch_sets(data.download, data.root, folders_of(data))
        except (DownloadError, FileNotFoundError, ValueError) as err:
            print(f"error: scan: fetching data.download.sets: {err}", file=sys.stderr)
            return 1
        for line in summary(record):
            print(f"scan: fetch {line}")
    manifest = scan(data)
    write_manifest(manifest, args.out)
    write_manifest({**manifest, "benchmarks": {}}, args.real_out)
    sets = {"real_pairs": manifest["real_pairs"], **manifest["benchmarks"]}
    for name, entry in sets.items():
        state = f"{entry['count']} pairs" if entry["present"] else "absent"
        print(f"scan {name}: {entry['path']}: {state}" + (f" ({entry['error']})"
                                                          if entry["error"] else ""))
        if entry["error"]:
            print(f"warning: {name}: {entry['error']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
