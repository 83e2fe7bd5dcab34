"""Two training runs of the matrix at once against one after the other, on this machine's
loopback Ray (``python -m ytmt.train.matrix``).

Two DVC projects with the repository's ``train`` stage (tests/train/matrix_project.py):
ytmt-ucs seeds 0 and 1 at width ``--width``, ``--steps`` steps of one epoch, one Ray worker
each (``train.cpus_per_worker`` 0.5, one torch thread), on real shards synthesized from
scikit-image's photos. One local Ray on loopback (``ytmt.train.matrix.local_ray``) serves
both projects; ``--jobs 1`` trains one after the other, ``--jobs 2`` both at once. Seconds
are the whole command: DVC, the stage processes, Ray Train's worker start, training,
validation, MLflow logging. The ratio is the serial time over the concurrent one, measured
in the same run; the runs' validation PSNR is printed for both (they must agree)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import saved_output  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=int, default=4)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--save", action="store_true",
                    help="also write the output to bench/results/matrix_cpu2.txt")
    args = ap.parse_args()
    import yaml

    from tests.train.conftest import make_shards
    from tests.train.matrix_project import train_project
    from ytmt.train.matrix import local_ray

    with saved_output("matrix_cpu2" if args.save else None), \
            tempfile.TemporaryDirectory(prefix="bench_matrix") as tmp:
        work = Path(tmp)
        shards = make_shards(work / "data", size=48, train=64, val=8)
        t0 = time.perf_counter()
        with local_ray() as joins:
            print(f"local Ray at {joins['RAY_ADDRESS']}: {time.perf_counter() - t0:.1f} s to start",
                  flush=True)
            rows = []
            for jobs in (1, 2):
                project = train_project(work / f"jobs{jobs}", shards)
                params = yaml.safe_load((project / "params.yaml").read_text())
                params["model"]["width"] = args.width
                params["train"]["max_steps_per_epoch"] = args.steps
                (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
                t0 = time.perf_counter()
                proc = subprocess.run([sys.executable, "-m", "ytmt.train.matrix", "--jobs",
                                       str(jobs)], cwd=project, capture_output=True, text=True,
                                      env={**os.environ, **joins})
                seconds = time.perf_counter() - t0
                if proc.returncode != 0:
                    sys.exit(proc.stdout[-2000:] + proc.stderr[-2000:])
                psnr = [json.loads((project / f"outputs/metrics/val/ytmt-ucs-seed{s}.json")
                                   .read_text())["psnr_t"] for s in (0, 1)]
                rows.append((jobs, seconds, psnr))
        print(f"2 runs (ytmt-ucs seeds 0, 1), width {args.width}, {args.steps} steps, "
              "1 Ray worker each")
        print(f"{'jobs':>4s} {'seconds':>8s} {'x serial':>8s}  val PSNR T (seed 0, 1)")
        for jobs, seconds, psnr in rows:
            print(f"{jobs:4d} {seconds:8.1f} {rows[0][1] / seconds:8.2f}  "
                  f"{psnr[0]:.4f}, {psnr[1]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
