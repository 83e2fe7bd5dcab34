"""Score a default recipe the way `dvc repro` runs it: the real stage scripts in a scratch
folder, then T̂ on the synthetic **test** split against the identity baseline (T̂ = input).

    python bench/recipe_search.py --work /tmp/recipe/a -S train.epochs=8 -S loss.perceptual=0.01

``-S key=value`` (YAML value) overrides params.yaml's dotted key. Each stage's wall time is
printed with ``nproc`` and the load average beside it (the machine may be shared). The
data stages (scan, fetch, synthesize) are reused from ``--work`` when their params did
not change. ``--stages`` picks a subset (e.g. ``train,evaluate`` after a data change is
not needed). The last line is one row of bench/results/recipe_cpu2.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
ALL = ("scan", "fetch", "synthesize", "tune", "train", "evaluate", "register")


def load_params(overrides: list[str]) -> dict:
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    for item in overrides:
        key, _, value = item.partition("=")
        *path, last = key.split(".")
        node = data
        for p in path:
            node = node[p]
        node[last] = yaml.safe_load(value)
    return data


def stage_commands(params: dict) -> dict[str, list[list[str]]]:
    py = sys.executable
    cmds = {
        "scan": [[py, f"{ROOT}/pipelines/scan_data.py", "--params", "params.yaml", "--out",
                  "outputs/data_manifest.json", "--real-out",
                  "outputs/real_pairs_manifest.json"]],
        "fetch": [[py, f"{ROOT}/pipelines/fetch.py", "--params", "params.yaml", "--out",
                   "outputs/images", "--metrics", "outputs/metrics/fetch.json"]],
        "synthesize": [[py, f"{ROOT}/pipelines/synthesize.py", "--params", "params.yaml",
                        "--images", "outputs/images", "--manifest",
                        "outputs/real_pairs_manifest.json", "--out", "outputs/shards",
                        "--metrics", "outputs/metrics/synthesize.json"]],
        "tune": [[py, f"{ROOT}/pipelines/tune.py", "--params", "params.yaml", "--shards",
                  "outputs/shards", "--out", "outputs/tune", "--fresh"]],
        "evaluate": [[py, f"{ROOT}/pipelines/evaluate.py", "--params", "params.yaml",
                      "--models", "outputs/models", "--shards", "outputs/shards", "--manifest",
                      "outputs/data_manifest.json", "--out", "outputs/eval", "--metrics",
                      "outputs/metrics/eval"]],
        "register": [[py, f"{ROOT}/pipelines/register.py", "--params", "params.yaml",
                      "--models", "outputs/models", "--eval", "outputs/eval", "--out",
                      "outputs/registry.json"]],
    }
    cmds["train"] = [
        [py, f"{ROOT}/pipelines/train.py", "--params", "params.yaml", "--variant", v, "--seed",
         str(s), "--shards", "outputs/shards", "--best", "outputs/tune/best.yaml", "--out",
         f"outputs/models/{v}/seed{s}", "--metrics", f"outputs/metrics/val/{v}-seed{s}.json",
         "--plots", "outputs/plots"]
        for v in params["train"]["variants"] for s in params["train"]["seeds"]]
    return cmds


def data_key(params: dict) -> str:
    return json.dumps([params["seed"], params["fetch"], params["synthesize"]], sort_keys=True)


def run_stages(work: Path, params: dict, stages: list[str]) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    key_file = work / "data_key.json"
    reuse = key_file.exists() and key_file.read_text() == data_key(params)
    times: dict[str, float] = {}
    cpus: dict[str, float] = {}
    for stage in stages:
        if stage in ("scan", "fetch", "synthesize") and reuse:
            continue
        if stage == "tune":
            for p in (work / "outputs/tune_runs", work / "outputs/tune"):
                subprocess.run(["rm", "-rf", str(p)], check=True)
        for i, cmd in enumerate(stage_commands(params)[stage]):
            start, cpu0 = time.perf_counter(), children_cpu()
            with open(work / f"{stage}{i}.log", "w") as log:
                rc = subprocess.run(cmd, cwd=work, env=env, stdout=log,
                                    stderr=subprocess.STDOUT).returncode
            seconds, cpu = time.perf_counter() - start, children_cpu() - cpu0
            name = f"{stage}{i}" if len(stage_commands(params)[stage]) > 1 else stage
            times[name], cpus[name] = seconds, cpu
            print(f"{stage}[{i}]: {seconds:.1f}s wall, {cpu:.1f}s CPU, rc={rc}, load "
                  f"{os.getloadavg()[0]:.2f}, nproc {os.cpu_count()}", flush=True)
            if rc:
                sys.exit(f"stage {stage} failed: see {work}/{stage}{i}.log")
        if stage == "synthesize":
            key_file.write_text(data_key(params))
    return times, cpus


def children_cpu() -> float:
    """CPU seconds (user + system) of the finished stage processes and the descendants they
    waited for. Ray's workers are not among them (Ray does not reap them through the stage):
    for Ray stages this is the driver's share only."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def input_ssim(shards: Path) -> tuple[float, float]:
    """Mean paper-protocol (PSNR, SSIM) of the mixture taken as T̂ over the test split."""
    from ytmt.evaluation.evaluate import iter_synthetic
    from ytmt.metrics import psnr_ssim

    scores = [psnr_ssim(s.mixture, s.transmission, "paper")
              for s in iter_synthetic(shards, "test")]
    return tuple(float(x) for x in np.mean(scores, axis=0))


def report(work: Path, params: dict) -> list[dict]:
    psnr_in, ssim_in = input_ssim(work / "outputs/shards")
    rows = []
    for v in params["train"]["variants"]:
        for s in params["train"]["seeds"]:
            f = work / f"outputs/metrics/eval/synthetic/{v}-seed{s}.json"
            m = json.loads(f.read_text()) if f.exists() else {}
            val = json.loads((work / f"outputs/metrics/val/{v}-seed{s}.json").read_text())
            rows.append({"run": f"{v}-seed{s}", "test_psnr_t": m.get("psnr_t"),
                         "test_ssim_t": m.get("ssim_t"), "test_psnr_in": psnr_in,
                         "test_ssim_in": ssim_in, "val_psnr_t": val.get("psnr_t"),
                         "val_psnr_in": val.get("psnr_i")})
    best = work / "outputs/tune/best.yaml"
    tuned = best.read_text().strip() if best.exists() else "-"
    for r in rows:
        print(f"RESULT {r['run']}: test T̂ {r['test_psnr_t']:.2f} dB / {r['test_ssim_t']:.3f} "
              f"vs input {psnr_in:.2f} / {ssim_in:.3f}; val {r['val_psnr_t']:.2f} vs "
              f"{r['val_psnr_in']:.2f}; tune best {tuned!r}", flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("-S", dest="overrides", action="append", default=[])
    ap.add_argument("--stages", default=",".join(ALL))
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    params = load_params(args.overrides)
    (args.work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    print(f"{args.work}: {' '.join(args.overrides) or 'params.yaml defaults'}", flush=True)
    start = time.perf_counter()
    times, cpus = run_stages(args.work, params, args.stages.split(","))
    total = time.perf_counter() - start
    rows = report(args.work, params)
    (args.work / "result.json").write_text(json.dumps(
        {"overrides": args.overrides, "times": times, "cpu": cpus, "total_s": total, "rows": rows,
         "load": os.getloadavg()}, indent=2))
    print(f"TIMES {json.dumps({k: round(v, 1) for k, v in times.items()})} total {total:.0f}s")
    print(f"CPU {json.dumps({k: round(v, 1) for k, v in cpus.items()})} "
          f"total {sum(cpus.values()):.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
