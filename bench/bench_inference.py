"""Inference throughput and peak memory: tiled ``ytmt.inference.separate`` against the untiled
forward (the baseline, measured in the same run).

Each measurement runs in a fresh process so that its peak memory is its own: on CPU the peak
resident set (``ru_maxrss``: model, image, outputs and activations), on CUDA
``torch.cuda.max_memory_allocated``. Prints megapixels/s and peak memory of both, their
ratios, and optionally a large photo (default 12 MP) that only the tiled path can run.

    python bench/bench_inference.py                       # CPU, full-width ytmt-ucs
    python bench/bench_inference.py --device cuda --large-mp 12
    python bench/bench_inference.py --width 8 --size 256x384 --large-mp 0   # a quick look
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def measure(args: argparse.Namespace, mode: str, height: int, width: int) -> dict:
    """Run in this process: build the model, separate a random image, report."""
    import numpy as np
    import torch

    import ytmt
    from ytmt.inference import separate, tile_count

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = ytmt.build_model(args.variant, width=args.width, vgg_weights="random").eval()
    model = model.to(device)
    image = np.random.default_rng(0).random((height, width, 3), dtype=np.float32)
    tile = None if mode == "untiled" else args.tile
    separate(model, image[:64, :64], tile=None)  # warm-up (kernels, allocator)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        separate(model, image, tile=tile, overlap=args.overlap)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    seconds = min(times)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
        peak_kind = "cuda_max_allocated"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
        peak_kind = "cpu_peak_rss"
    return {"mode": mode, "height": height, "width": width, "seconds": seconds,
            "mp_per_s": height * width / 1e6 / seconds, "peak_gib": peak,
            "peak_kind": peak_kind, "passes": tile_count(height, width, tile, args.overlap),
            "threads": torch.get_num_threads()}


def run_child(args: argparse.Namespace, mode: str, height: int, width: int) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--size", f"{height}x{width}",
           "--device", args.device, "--variant", args.variant, "--width", str(args.width),
           "--tile", str(args.tile), "--overlap", str(args.overlap),
           "--repeats", str(args.repeats)] + (["--threads", str(args.threads)]
                                              if args.threads else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"mode": mode, "height": height, "width": width,
                "error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--variant", default="ytmt-ucs")
    ap.add_argument("--width", type=int, default=64, help="network width (paper: 64)")
    ap.add_argument("--size", type=_size, default=(512, 768),
                    help="HxW of the image both paths run (default 512x768)")
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--large-mp", type=float, default=0.0,
                    help="also run a 4:3 photo of this many megapixels tiled (e.g. 12)")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    h, w = args.size
    if args.child:
        print(json.dumps(measure(args, args.child, h, w)))
        return 0

    print(f"device {args.device}, {args.variant} width {args.width}, tile {args.tile} "
          f"overlap {args.overlap}, image {h}x{w}", flush=True)
    results = [run_child(args, "untiled", h, w), run_child(args, "tiled", h, w)]
    if args.large_mp > 0:
        lw = int(round((args.large_mp * 1e6 * 4 / 3) ** 0.5))
        results.append(run_child(args, "tiled", int(round(lw * 3 / 4)), lw))
    print(f"{'mode':8s} {'image':>11s} {'passes':>6s} {'seconds':>8s} {'MP/s':>7s} "
          f"{'peak GiB':>9s}")
    for r in results:
        if "error" in r:
            print(f"{r['mode']:8s} {r['height']}x{r['width']:<6d} failed: {r['error']}")
            continue
        print(f"{r['mode']:8s} {r['height']:>5d}x{r['width']:<5d} {r['passes']:>6d} "
              f"{r['seconds']:>8.2f} {r['mp_per_s']:>7.3f} {r['peak_gib']:>9.2f}")
    base, tiled = results[0], results[1]
    if "error" not in base and "error" not in tiled:
        print(f"tiled / untiled: throughput x{tiled['mp_per_s'] / base['mp_per_s']:.2f}, "
              f"peak memory x{tiled['peak_gib'] / base['peak_gib']:.2f} "
              f"({tiled['peak_kind']})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items() if k != "child"},
                       "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
