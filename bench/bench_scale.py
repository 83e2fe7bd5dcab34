"""Scale: does the data path and the evaluate stage grow linearly in time, flat in memory?

Data: a VOC-sized pool of photos (``--pool`` 7,643 JPEGs at VOC's ~500×375, cut from
scikit-image's bundled photos with random rescales, crops, flips and colour gains) is
generated once; at each fraction of it (``--fractions``: 1/16, 1/4, 1) a fresh process runs
the fetch stage (folder source, ``fetch.limit``) and the synthesize stage (paper settings:
stored 256², rescale 256-448, one training mixture per photo, 5 % held out each for val and
test), then another fresh process reads the training split with the training reader
(224² crops + flips, ``DataLoader`` batch 16). Each reports seconds, time per item, peak
resident memory (the process and its largest worker), and the shards' size.

Evaluate: at 1×, 4× and 16× Real20's 20 pairs (``--eval-multiples``), synthetic pairs of
Real20-like sizes (short side 400-540 px, 4:3 or 3:4) in the common layout
(``blended/``, ``transmission_layer/``) are scored by ``run_evaluation`` with a width-8
ytmt-ucs (``--eval-width``) in a fresh process: seconds, seconds per image, peak memory.
``--primitive-cache 1024`` gives the child oneDNN's default primitive cache instead of the
stage's (off for whole images: ``ytmt.evaluation.evaluate.bound_primitive_cache``).

    python bench/bench_scale.py                 # everything, full size (README rows)
    python bench/bench_scale.py --pool 1024 --eval-multiples 1,4   # a quicker look
    python bench/bench_scale.py --save          # + bench/results/scale_cpu2.txt
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

SOURCES = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "motorcycle_right",
           "hubble_deep_field", "immunohistochemistry", "retina")
VOC_SIZE = (375, 500)  # VOC 2012's typical photo, landscape (H, W)
LINEAR = 1.3  # time per item and peak memory may grow by this factor and still count as flat


def _peak_mib() -> dict[str, float]:
    """Peak resident memory (MiB) of this process and of its largest reaped child."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"peak_mib": round(own, 1), "worker_peak_mib": round(kids, 1)}


def _variant(rng: np.random.Generator, photos: list[np.ndarray], shape: tuple[int, int]):
    """A photo of ``shape`` cut from a random source: rescale, crop, flip, colour gains."""
    import cv2

    src = photos[int(rng.integers(len(photos)))]
    h, w = shape
    scale = max(h / src.shape[0], w / src.shape[1]) * rng.uniform(1.0, 1.8)
    big = cv2.resize(src, (int(np.ceil(src.shape[1] * scale)), int(np.ceil(src.shape[0]
                                                                             * scale))),
                     interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    y = int(rng.integers(big.shape[0] - h + 1))
    x = int(rng.integers(big.shape[1] - w + 1))
    out = big[y:y + h, x:x + w].astype(np.float32) * rng.uniform(0.7, 1.2, 3)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.clip(out, 0, 255).astype(np.uint8)


def _sources() -> list[np.ndarray]:
    from ytmt.data.sources import sample_images

    return [arr for _, arr in sample_images(SOURCES)]


def make_pool(folder: Path, n: int) -> None:
    """``n`` VOC-like JPEGs (a quarter portrait) in ``folder``; kept between runs."""
    from PIL import Image

    from ytmt.progress import Progress

    if len(list(folder.glob("*.jpg"))) == n:
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng, photos = np.random.default_rng(0), _sources()
    prog = Progress("pool", n)
    for i in range(n):
        shape = VOC_SIZE if rng.random() < 0.75 else VOC_SIZE[::-1]
        Image.fromarray(_variant(rng, photos, shape)).save(folder / f"{i:05d}.jpg", quality=90)
        prog.update()
    prog.close()


def make_pairs(root: Path, n: int) -> None:
    """``n`` Real20-like pairs in the common layout under ``root``."""
    import cv2
    from PIL import Image

    rng, photos = np.random.default_rng(1), _sources()
    for sub in ("blended", "transmission_layer"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        short = int(rng.integers(400, 541))
        shape = (short, short * 4 // 3) if rng.random() < 0.75 else (short * 4 // 3, short)
        t = _variant(rng, photos, shape).astype(np.float32)
        r = cv2.GaussianBlur(_variant(rng, photos, shape), (11, 11), 3).astype(np.float32)
        m = np.clip(0.8 * t + 0.4 * r, 0, 255).astype(np.uint8)
        Image.fromarray(m).save(root / "blended" / f"{i:04d}.png", compress_level=1)
        Image.fromarray(t.astype(np.uint8)).save(root / "transmission_layer" / f"{i:04d}.png",
                                                 compress_level=1)


# --------------------------------------------------------------------------- children

def child_synthesize(work: Path, pool: Path, n: int) -> dict:
    from ytmt.data.config import FetchConfig, SynthesizeConfig
    from ytmt.data.sources import fetch_images
    from ytmt.data.synthesis import synthesize_shards

    images, shards = work / "images", work / "shards"
    t0 = time.perf_counter()
    fetch_images(FetchConfig(source="folder", folder=str(pool), limit=n), images)
    fetch_s = time.perf_counter() - t0
    held = max(2, n // 20)
    cfg = SynthesizeConfig(size=256, scale_min=256, scale_max=448, train_mixtures=n,
                           val_mixtures=held, test_mixtures=held, val_image_fraction=0.05,
                           test_image_fraction=0.05)
    t0 = time.perf_counter()
    metrics = synthesize_shards(images, shards, cfg, seed=0)
    synth_s = time.perf_counter() - t0
    mixtures = sum(s["rows"] for s in metrics["splits"].values())
    shard_bytes = sum(f.stat().st_size for f in shards.rglob("*.parquet"))
    return {"photos": n, "mixtures": mixtures, "fetch_s": fetch_s, "synth_s": synth_s,
            "shard_mib": shard_bytes / 2**20, "workers": metrics["workers"], **_peak_mib()}


def child_read(work: Path) -> dict:
    from torch.utils.data import DataLoader

    from ytmt.data.reader import ShardDataset

    ds = ShardDataset(work / "shards", split="train", crop=224, augment=True)
    t0 = time.perf_counter()
    n = sum(b["mixture"].shape[0] for b in DataLoader(ds, batch_size=16))
    seconds = time.perf_counter() - t0
    return {"read_samples": n, "read_s": seconds, "read_per_s": n / seconds, **_peak_mib()}


def child_evaluate(work: Path, width: int, precision: str, threads: int) -> dict:
    import torch

    import ytmt
    from ytmt.checkpoint import model_spec, save_checkpoint
    from ytmt.data.config import DataConfig
    from ytmt.data.manifest import scan, write_manifest
    from ytmt.evaluation.config import EvaluateConfig
    from ytmt.evaluation.evaluate import run_evaluation
    from ytmt.model_store import MODEL_FILE, ModelInfo, run_dir, write_info

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = ytmt.build_model("ytmt-ucs", width=width, vgg_weights="random")
    folder = run_dir(work / "models", "ytmt-ucs", 0)  # the train stage's model-store layout
    path = save_checkpoint(folder / MODEL_FILE, model, model_spec(model, width))
    write_info(folder, ModelInfo(variant="ytmt-ucs", seed=0, model_path=str(path)))
    manifest = work / "data_manifest.json"
    write_manifest(scan(DataConfig(root=str(work / "data"), benchmarks={"real20": "real20"})),
                   manifest)
    cfg = EvaluateConfig(synthetic=False, precision=precision, torch_threads=threads or None)
    t0 = time.perf_counter()
    summary = run_evaluation(cfg, work / "models", None, manifest, work / "eval",
                             log_mlflow=False)
    seconds = time.perf_counter() - t0
    n = summary["sets"][0]["scored"]
    return {"images": n, "eval_s": seconds, "s_per_image": seconds / n,
            "precision": summary["precision"], **_peak_mib()}


def run_child(*argv: str, env: dict[str, str] | None = None) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", *argv], capture_output=True,
                          text=True, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        sys.exit(f"child {argv} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- parent

def verdict(rows: list[dict], per_item: str, label: str) -> str:
    """Growth of time per item and of peak memory from the smallest to the largest run."""
    first, last = rows[0], rows[-1]
    t_ratio = last[per_item] / first[per_item]
    mem = max(last["peak_mib"], last.get("worker_peak_mib", 0))
    mem0 = max(first["peak_mib"], first.get("worker_peak_mib", 0))
    linear = "linear" if t_ratio <= LINEAR else "NOT linear"
    flat = "flat" if mem / mem0 <= LINEAR else "NOT flat"
    return (f"{label}: time per item x{t_ratio:.2f} over a {last['_scale'] / first['_scale']:.0f}x "
            f"larger input ({linear}), peak memory {mem0:.0f} -> {mem:.0f} MiB ({flat})")


def data_scale(args, work: Path) -> None:
    pool = work / "pool"
    t0 = time.perf_counter()
    make_pool(pool, args.pool)
    print(f"pool: {args.pool} photos of ~{VOC_SIZE[1]}x{VOC_SIZE[0]} in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    rows = []
    print(f"{'fraction':>8s} {'photos':>6s} {'mixtures':>8s} {'fetch s':>7s} {'synth s':>7s} "
          f"{'ms/mix':>6s} {'peak MiB':>8s} {'worker MiB':>10s} {'shards MiB':>10s} "
          f"{'read/s':>7s} {'read MiB':>8s}")
    for frac in (Fraction(f) for f in args.fractions.split(",")):
        n = max(16, int(args.pool * frac))
        run = work / f"run_{n}"
        shutil.rmtree(run, ignore_errors=True)
        s = run_child("synthesize", str(run), str(pool), str(n))
        r = run_child("read", str(run))
        s["ms_per_mixture"] = 1e3 * s["synth_s"] / s["mixtures"]
        s["_scale"] = n
        r["_scale"], r["s_per_sample"] = n, 1 / r["read_per_s"]
        print(f"{str(frac):>8s} {n:>6d} {s['mixtures']:>8d} {s['fetch_s']:>7.1f} "
              f"{s['synth_s']:>7.1f} {s['ms_per_mixture']:>6.2f} {s['peak_mib']:>8.0f} "
              f"{s['worker_peak_mib']:>10.0f} {s['shard_mib']:>10.1f} {r['read_per_s']:>7.0f} "
              f"{r['peak_mib']:>8.0f}", flush=True)
        rows.append((s, r))
        shutil.rmtree(run, ignore_errors=True)
    print("RESULT scale " + verdict([s for s, _ in rows], "ms_per_mixture", "synthesis"))
    print("RESULT scale " + verdict([r for _, r in rows], "s_per_sample", "training reader"))


def eval_scale(args, work: Path) -> None:
    rows = []
    env, cache = None, "the evaluate stage's (off for whole images)"
    if args.primitive_cache is not None:
        env = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": str(args.primitive_cache)}
        cache = f"{args.primitive_cache} primitives"
    print(f"evaluate, width-{args.eval_width} ytmt-ucs, whole images; oneDNN primitive cache: "
          f"{cache}", flush=True)
    print(f"{'x Real20':>8s} {'images':>6s} {'seconds':>7s} {'s/image':>7s} {'peak MiB':>8s} "
          f"precision")
    for k in (int(m) for m in args.eval_multiples.split(",")):
        run = work / f"eval_{k}"
        shutil.rmtree(run, ignore_errors=True)
        make_pairs(run / "data" / "real20", 20 * k)
        e = run_child("evaluate", str(run), str(args.eval_width), args.precision,
                      str(args.threads), env=env)
        e["_scale"] = 20 * k
        print(f"{k:>8d} {e['images']:>6d} {e['eval_s']:>7.1f} {e['s_per_image']:>7.2f} "
              f"{e['peak_mib']:>8.0f} {e['precision']}", flush=True)
        rows.append(e)
        shutil.rmtree(run, ignore_errors=True)
    print("RESULT scale " + verdict(rows, "s_per_image", "evaluate"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pool", type=int, default=7643, help="photos in the full pool (VOC)")
    ap.add_argument("--fractions", default="1/16,1/4,1")
    ap.add_argument("--eval-multiples", default="1,4,16", help="multiples of Real20's 20")
    ap.add_argument("--eval-width", type=int, default=8)
    ap.add_argument("--precision", default="fp32", help="evaluate.precision (params default)")
    ap.add_argument("--threads", type=int, default=2, help="evaluate: torch threads")
    ap.add_argument("--stages", default="data,evaluate")
    ap.add_argument("--primitive-cache", type=int, default=None,
                    help="evaluate: $ONEDNN_PRIMITIVE_CACHE_CAPACITY for the child (default: "
                         "the evaluate stage's own choice, 0 for whole images; oneDNN's "
                         "default is 1024)")
    ap.add_argument("--work", default=None, help="work folder (default: a temp folder; the "
                                                 "generated pool is kept there between runs)")
    ap.add_argument("--save", action="store_true",
                    help="also write the output to bench/results/scale_cpu<threads>.txt")
    ap.add_argument("--child", nargs="+", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        fn = {"synthesize": lambda: child_synthesize(Path(rest[0]), Path(rest[1]),
                                                     int(rest[2])),
              "read": lambda: child_read(Path(rest[0])),
              "evaluate": lambda: child_evaluate(Path(rest[0]), int(rest[1]), rest[2],
                                                 int(rest[3]))}[kind]
        print(json.dumps(fn()))
        return 0
    from common import saved_output

    work = Path(args.work or tempfile.mkdtemp(prefix="ytmt-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    with saved_output(f"scale_cpu{args.threads}" if args.save else None):
        print(f"work folder {work}", flush=True)
        if "data" in args.stages:
            data_scale(args, work)
        if "evaluate" in args.stages:
            eval_scale(args, work)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
