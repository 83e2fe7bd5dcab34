"""DVC stage `scan`: record which external real data under params `data.root` is present."""

from __future__ import annotations

import argparse
import sys

from ytmt.data.manifest import scan, write_manifest
from ytmt.params import load_params, run_stage


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="outputs/data_manifest.json")
    ap.add_argument("--real-out", default="outputs/real_pairs_manifest.json",
                    help="the real training pairs only: synthesis depends on this file, so a "
                         "new benchmark set does not re-run synthesis")
    args = ap.parse_args(argv)
    manifest = scan(load_params(args.params).data)
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
