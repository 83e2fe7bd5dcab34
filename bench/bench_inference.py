"""Inference throughput, share of the matmul peak and peak memory of ``ytmt separate``:
tiled ``ytmt.inference.separate`` against the untiled forward (the baseline, same run), in
fp32 and bf16, and a 12 MP photo tiled.

Each measurement runs in a fresh process so that its peak memory is its own: on CPU the peak
resident set (``ru_maxrss``: model, image, outputs and activations), on CUDA
``torch.cuda.max_memory_allocated``. FLOPs are counted once per pass shape
(``bench.common.count_flops``: every tile of a tiled run has the tile's size) and compared
with the matmul peak of the same dtype measured in this run (``bench.common.matmul_peak``).

    python bench/bench_inference.py                 # CPU, 2 threads, full width: README rows
    python bench/bench_inference.py --save          # + bench/results/inference_cpu2.txt
    python bench/bench_inference.py --device cuda --threads 0 --tile 512 --overlap 64
    python bench/bench_inference.py --width 8 --size 256x384 --large-mp 0   # a quick look
    python bench/bench_inference.py --variant ytmt-uct-released --psnr      # the released model

``--psnr`` also separates one natural photo (scikit-image's astronaut, resized to ``--size``)
tiled and untiled in one process and prints the PSNR between the two outputs (T and R): how
far tiling at ``--tile``/``--overlap`` moves the result. Weights are random unless
``--checkpoint`` names a real model (``ytmt import-authors`` output): cost does not depend on
them, but the tiling PSNR does. PyTorch's default init makes a deep random net nearly blind to
context (the PSNR comes out absurdly high); ``--he-init`` re-draws every conv He-normal so the
output depends on every layer, a harsher stand-in that is still not the trained network.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def load_model(args: argparse.Namespace):
    """The model to measure: ``--checkpoint``, else ``--variant`` with random weights."""
    import math

    import torch

    import ytmt
    from ytmt.checkpoint import model_from_checkpoint

    torch.manual_seed(0)
    if args.checkpoint:
        return model_from_checkpoint(args.checkpoint)
    model = ytmt.build_model(args.variant, width=args.width, vgg_weights="random").eval()
    if args.he_init:
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, m in model.named_modules():
                if isinstance(m, torch.nn.Conv2d) and not name.startswith("features."):
                    fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                    m.weight.normal_(0.0, math.sqrt(2.0 / fan_in), generator=gen)
                    if m.bias is not None:
                        m.bias.normal_(0.0, 0.1, generator=gen)
    return model


def measure(args: argparse.Namespace, mode: str, height: int, width: int) -> dict:
    """Run in this process: build the model, separate a random image, report."""
    import numpy as np
    import torch
    from common import count_flops

    from ytmt.inference import separate, tile_count

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = load_model(args).to(device)
    image = np.random.default_rng(0).random((height, width, 3), dtype=np.float32)
    tile = None if mode == "untiled" else args.tile
    passes = tile_count(height, width, tile, args.overlap)
    one = image if passes == 1 else image[:tile, :tile]  # every tile is tile×tile
    flops = passes * count_flops(lambda: separate(model, one, tile=None,
                                                  precision=args.child_precision))
    separate(model, image[:64, :64], tile=None, precision=args.child_precision)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        separate(model, image, tile=tile, overlap=args.overlap, precision=args.child_precision)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    seconds = min(times)
    if device.type == "cuda":
        peak, peak_kind = torch.cuda.max_memory_allocated() / 2**30, "cuda_max_allocated"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
        peak_kind = "cpu_peak_rss"
    return {"mode": mode, "precision": args.child_precision, "height": height, "width": width,
            "seconds": seconds, "mp_per_s": height * width / 1e6 / seconds, "flops": flops,
            "peak_gib": peak, "peak_kind": peak_kind, "passes": passes,
            "threads": torch.get_num_threads()}


def tiling_psnr(args: argparse.Namespace, height: int, width: int) -> dict:
    """Run in this process: PSNR (dB, [0,1] range) between tiled and untiled T̂ and R̂."""
    import numpy as np
    import torch
    from PIL import Image
    from skimage import data

    from ytmt.inference import separate

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args)
    photo = Image.fromarray(data.astronaut()).resize((width, height), Image.BICUBIC)
    image = np.asarray(photo, dtype=np.float32) / 255
    untiled = separate(model, image, tile=None, device=args.device)
    tiled = separate(model, image, tile=args.tile, overlap=args.overlap, device=args.device)
    out = {"mode": "psnr", "height": height, "width": width}
    for name, a, b in zip(("t", "r"), untiled, tiled, strict=True):
        mse = float(np.mean((a.astype(np.float64) - b) ** 2))
        out[f"psnr_{name}"] = 10 * np.log10(1.0 / mse) if mse > 0 else float("inf")
    return out


def run_child(args: argparse.Namespace, mode: str, precision: str, height: int,
              width: int) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--child-precision", precision,
           "--size", f"{height}x{width}", "--device", args.device, "--variant", args.variant,
           "--width", str(args.width), "--tile", str(args.tile), "--overlap",
           str(args.overlap), "--repeats", str(args.repeats), "--threads", str(args.threads)] + \
        (["--checkpoint", args.checkpoint] if args.checkpoint else []) + \
        (["--he-init"] if args.he_init else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"mode": mode, "precision": precision, "height": height, "width": width,
                "error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def _report(results: list[dict], peaks: dict, device: str, threads: int) -> None:
    print(f"{'mode':8s} {'dtype':5s} {'image':>11s} {'passes':>6s} {'seconds':>8s} "
          f"{'MP/s':>7s} {'GFLOP/s':>8s} {'of peak':>7s} {'peak GiB':>9s}")
    for r in results:
        if "error" in r:
            print(f"{r['mode']:8s} {r['precision']:5s} {r['height']}x{r['width']} failed: "
                  f"{r['error']}")
            continue
        rate = r["flops"] / r["seconds"]
        r["share_of_peak"] = peaks[r["precision"]].share(rate)
        print(f"{r['mode']:8s} {r['precision']:5s} {r['height']:>5d}x{r['width']:<5d} "
              f"{r['passes']:>6d} {r['seconds']:>8.2f} {r['mp_per_s']:>7.3f} "
              f"{rate / 1e9:>8.0f} {r['share_of_peak']:>7.0%} {r['peak_gib']:>9.2f}")
    for r in results:
        if "error" in r:
            continue
        mp = r["height"] * r["width"] / 1e6
        print(f"RESULT inference {mp:.1f} MP {r['mode']} {r['precision']} {device} "
              f"{threads} threads: {r['seconds']:.1f} s, {r['mp_per_s']:.3f} MP/s, "
              f"{r['share_of_peak']:.0%} of the {r['precision']} matmul peak "
              f"({peaks[r['precision']].share_of_reference(r['flops'] / r['seconds']):.0%} of a "
              f"2048² torch.matmul), peak memory "
              f"{r['peak_gib']:.2f} GiB")


def run_all(args: argparse.Namespace, precisions: list[str]) -> list[dict]:
    """Untiled and tiled ``--size`` per precision, then the large photo tiled."""
    h, w = args.size
    results = []
    for p in precisions:
        results += [run_child(args, "untiled", p, h, w), run_child(args, "tiled", p, h, w)]
    if args.large_mp > 0:
        lw = int(round((args.large_mp * 1e6 * 4 / 3) ** 0.5))
        results += [run_child(args, "tiled", p, int(round(lw * 3 / 4)), lw)
                    for p in precisions]
    return results


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
    ap.add_argument("--threads", type=int, default=2, help="torch threads (0: torch default)")
    ap.add_argument("--precisions", default="fp32,bf16", help="comma list: fp32, bf16")
    ap.add_argument("--large-mp", type=float, default=12.0,
                    help="also run a 4:3 photo of this many megapixels tiled (0: skip)")
    ap.add_argument("--checkpoint", default=None,
                    help="measure this ytmt checkpoint (e.g. an imported model) instead")
    ap.add_argument("--he-init", action="store_true",
                    help="random weights He-normal instead of PyTorch's default init")
    ap.add_argument("--psnr", action="store_true",
                    help="also print the PSNR between tiled and untiled outputs at --size")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument("--save", action="store_true",
                    help="also write the output to bench/results/inference_<device><threads>.txt")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-precision", default="fp32", help=argparse.SUPPRESS)
    args = ap.parse_args()
    h, w = args.size
    if args.child:
        run = tiling_psnr if args.child == "psnr" else lambda a, hh, ww: measure(a, a.child, hh, ww)
        print(json.dumps(run(args, h, w)))
        return 0

    import torch
    from common import matmul_peak, saved_output

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    precisions = args.precisions.split(",")
    with saved_output(f"inference_{args.device}{threads}" if args.save else None):
        peaks = {p: matmul_peak(torch.float32 if p == "fp32" else torch.bfloat16, args.device)
                 for p in precisions}
        print(f"device {args.device} ({threads} threads), {args.checkpoint or args.variant} "
              f"width {args.width}, {'He-normal' if args.he_init else 'default'} init, "
              f"tile {args.tile} overlap {args.overlap}, image {h}x{w}; measured "
              + ", ".join(str(p) for p in peaks.values()), flush=True)
        results = run_all(args, precisions)
        peaks = {p: matmul_peak(torch.float32 if p == "fp32" else torch.bfloat16,
                                args.device).best(peaks[p]) for p in precisions}
        print("measured again after the runs (the best of both counts): "
              + ", ".join(str(p) for p in peaks.values()))
        _report(results, peaks, args.device, threads)
        for p in precisions:
            base, tiled = (next(r for r in results if r["mode"] == m and r["precision"] == p)
                           for m in ("untiled", "tiled"))
            if "error" not in base and "error" not in tiled:
                print(f"{p} tiled / untiled: throughput "
                      f"x{tiled['mp_per_s'] / base['mp_per_s']:.2f}, peak memory "
                      f"x{tiled['peak_gib'] / base['peak_gib']:.2f} ({tiled['peak_kind']})")
        psnr = run_child(args, "psnr", "fp32", h, w) if args.psnr else None
        if psnr is not None:
            print(f"tiled ({args.tile}/{args.overlap}) vs untiled on a {h}x{w} photo: " + (
                psnr["error"] if "error" in psnr else
                f"PSNR T {psnr['psnr_t']:.2f} dB, R {psnr['psnr_r']:.2f} dB"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items() if k != "child"},
                       "results": results, "psnr": psnr}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
