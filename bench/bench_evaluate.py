"""Evaluation fanned out over Ray workers against the single-process evaluate stage.

One width-``--width`` ytmt-ucs model (random weights: the time does not depend on them) on
``--images`` Real20-like pairs (short side 400-540 px, 4:3 or 3:4, made by
``bench_scale.make_pairs``), fp32, on this machine's CPUs, three ways, each in a fresh
process like the DVC stage:

- ``single``: ``evaluate.workers: 0``, one process with ``--threads`` torch threads;
- ``1 worker``: one Ray worker holding ``--threads`` CPUs (and as many torch threads);
- ``2 workers``: two Ray workers of ``--threads / 2`` CPUs (and threads) each.

Seconds are the whole ``run_evaluation`` call, Ray's start and the workers' included;
s/image divides them by the images. The ratio is the single-process time over each one,
measured in the same run. The per-image scores of the three are checked equal to the
single-process ones up to the change of thread count (printed: the largest PSNR
difference)."""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import saved_output  # noqa: E402


def child(work: Path, width: int, threads: int, workers: int) -> dict:
    import torch

    import ytmt
    from ytmt.checkpoint import model_spec, save_checkpoint
    from ytmt.data.config import DataConfig
    from ytmt.data.manifest import scan, write_manifest
    from ytmt.evaluation.config import EvaluateConfig
    from ytmt.evaluation.evaluate import run_evaluation
    from ytmt.model_store import MODEL_FILE, ModelInfo, run_dir, write_info

    torch.manual_seed(0)
    model = ytmt.build_model("ytmt-ucs", width=width, vgg_weights="random")
    folder = run_dir(work / "models", "ytmt-ucs", 0)
    if not (folder / MODEL_FILE).is_file():
        path = save_checkpoint(folder / MODEL_FILE, model, model_spec(model, width))
        write_info(folder, ModelInfo(variant="ytmt-ucs", seed=0, model_path=str(path)))
    manifest = work / "data_manifest.json"
    write_manifest(scan(DataConfig(root=str(work / "data"), benchmarks={"real20": "real20"})),
                   manifest)
    cfg = EvaluateConfig(synthetic=False, precision="fp32", torch_threads=None if workers
                         else threads, workers=workers,
                         cpus_per_worker=threads / max(workers, 1), use_gpu=False)
    out = work / f"eval_w{workers}"
    t0 = time.perf_counter()
    summary = run_evaluation(cfg, work / "models", None, manifest, out, log_mlflow=False)
    seconds = time.perf_counter() - t0
    n = summary["sets"][0]["scored"]
    return {"workers": workers, "images": n, "seconds": seconds, "s_per_image": seconds / n,
            "csv": str(out / "per_image.csv")}


def run_child(work: Path, args, workers: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", str(work), "--width",
                           str(args.width), "--threads", str(args.threads), "--workers",
                           str(workers)], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"child (workers {workers}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def psnr_gap(a: str, b: str) -> float:
    """The largest |PSNR of T̂| difference between two per-image CSVs (same images)."""
    rows_a, rows_b = (list(csv.DictReader(open(p))) for p in (a, b))
    return max(abs(float(x["psnr_t"]) - float(y["psnr_t"]))
               for x, y in zip(rows_a, rows_b, strict=True))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2, help="CPUs in all (2 here)")
    ap.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--save", action="store_true",
                    help="also write the output to bench/results/evaluate_cpu<threads>.txt")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child), args.width, args.threads, args.workers)))
        return 0
    from bench_scale import make_pairs

    with saved_output(f"evaluate_cpu{args.threads}" if args.save else None), \
            tempfile.TemporaryDirectory(prefix="bench_eval") as tmp:
        work = Path(tmp)
        make_pairs(work / "data" / "real20", args.images)
        print(f"evaluate, width {args.width}, {args.images} Real20-like pairs, fp32, "
              f"{args.threads} CPUs (os.cpu_count() = {os.cpu_count()})", flush=True)
        print(f"{'mode':>10s} {'seconds':>8s} {'s/image':>8s} {'x single':>8s} "
              f"{'max |dPSNR|':>11s}", flush=True)
        base = None
        for workers, label in ((0, "single"), (1, "1 worker"), (2, "2 workers")):
            row = run_child(work, args, workers)
            base = base or row
            print(f"{label:>10s} {row['seconds']:8.1f} {row['s_per_image']:8.2f} "
                  f"{base['seconds'] / row['seconds']:8.2f} "
                  f"{psnr_gap(base['csv'], row['csv']):11.2e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
