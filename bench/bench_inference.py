"""Inference throughput and peak memory: tiled ``ytmt.inference.separate`` against the untiled
forward (the baseline, measured in the same run).

Each measurement runs in a fresh process so that its peak memory is its own: on CPU the peak
resident set (``ru_maxrss``: model, image, outputs and activations), on CUDA
``torch.cuda.max_memory_allocated``. Prints megapixels/s and peak memory of both, their
ratios, and optionally a large photo (default 12 MP) that only the tiled path can run.

    python bench/bench_inference.py                       # CPU, full-width ytmt-ucs
    python bench/bench_inference.py --device cuda --large-mp 12
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

    from ytmt.inference import separate, tile_count

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = load_model(args).to(device)
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


def run_child(args: argparse.Namespace, mode: str, height: int, width: int) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--size", f"{height}x{width}",
           "--device", args.device, "--variant", args.variant, "--width", str(args.width),
           "--tile", str(args.tile), "--overlap", str(args.overlap),
           "--repeats", str(args.repeats)] + (["--threads", str(args.threads)]
                                              if args.threads else []) + \
        (["--checkpoint", args.checkpoint] if args.checkpoint else []) + \
        (["--he-init"] if args.he_init else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"mode": mode, "height": height, "width": width,
                "error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _print_results(args: argparse.Namespace, results: list[dict], psnr: dict | None,
                   h: int, w: int) -> None:
    print(f"{'mode':8s} {'image':>11s} {'passes':>6s} {'seconds':>8s} {'MP/s':>7s} "
          f"{'peak GiB':>9s}")
    for r in results:
        if "error" in r:
            print(f"{r['mode']:8s} {r['height']}x{r['width']:<6d} failed: {r['error']}")
            continue
        print(f"{r['mode']:8s} {r['height']:>5d}x{r['width']:<5d} {r['passes']:>6d} "
              f"{r['seconds']:>8.2f} {r['mp_per_s']:>7.3f} {r['peak_gib']:>9.2f}")
    if psnr is not None:
        print(f"tiled ({args.tile}/{args.overlap}) vs untiled on a {h}x{w} photo: " + (
            psnr["error"] if "error" in psnr else
            f"PSNR T {psnr['psnr_t']:.2f} dB, R {psnr['psnr_r']:.2f} dB"))
    base, tiled = results[0], results[1]
    if "error" not in base and "error" not in tiled:
        print(f"tiled / untiled: throughput x{tiled['mp_per_s'] / base['mp_per_s']:.2f}, "
              f"peak memory x{tiled['peak_gib'] / base['peak_gib']:.2f} "
              f"({tiled['peak_kind']})")


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
    ap.add_argument("--checkpoint", default=None,
                    help="measure this ytmt checkpoint (e.g. an imported model) instead")
    ap.add_argument("--he-init", action="store_true",
                    help="random weights He-normal instead of PyTorch's default init")
    ap.add_argument("--psnr", action="store_true",
                    help="also print the PSNR between tiled and untiled outputs at --size")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    h, w = args.size
    if args.child:
        run = tiling_psnr if args.child == "psnr" else lambda a, hh, ww: measure(a, a.child, hh, ww)
        print(json.dumps(run(args, h, w)))
        return 0

    print(f"device {args.device}, {args.checkpoint or args.variant} width {args.width}, "
          f"{'He-normal' if args.he_init else 'default'} init, tile {args.tile} "
          f"overlap {args.overlap}, image {h}x{w}", flush=True)
    results = [run_child(args, "untiled", h, w), run_child(args, "tiled", h, w)]
    if args.large_mp > 0:
        lw = int(round((args.large_mp * 1e6 * 4 / 3) ** 0.5))
        results.append(run_child(args, "tiled", int(round(lw * 3 / 4)), lw))
    psnr = run_child(args, "psnr", h, w) if args.psnr else None
    _print_results(args, results, psnr, h, w)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items() if k != "child"},
                       "results": results, "psnr": psnr}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
