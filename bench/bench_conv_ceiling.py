"""How close a lone 3×3 convolution of each U-Net level gets to the machine's matmul peak.

The training step cannot run faster than its convolutions. This bench times one level's
3×3 convolution (the network's widths 64·(1, 2, 4, 8, 8) at the crop halved per level,
batch 1, channels-last), forward and forward + backward, and divides its rate by the
matmul peak of the same dtype measured in the same run (``common.matmul_peak``, the peak
``bench_step.py`` reports its share of). Where these shares stay below a target, so does
the whole step, whatever the element-wise work costs.

    python bench/bench_conv_ceiling.py                 # bf16, 128² and 224², 2 threads
    python bench/bench_conv_ceiling.py --dtype fp32 --sizes 128
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F
from common import fastest, matmul_peak, saved_output

LEVEL_WIDTHS = (1, 2, 4, 8, 8)  # × the base width, halving the size per level


def conv_rates(channels: int, size: int, dtype: torch.dtype, budget_s: float
               ) -> tuple[float, float]:
    """FLOP/s of a ``channels → channels`` 3×3 convolution on ``(1, channels, size, size)``:
    forward, and forward + backward (input and weight gradients: 3× the forward FLOPs)."""
    cpu = torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, channels, size, size, generator=gen).to(dtype).contiguous(
        memory_format=torch.channels_last)
    w = torch.randn(channels, channels, 3, 3, generator=gen).to(dtype).contiguous(
        memory_format=torch.channels_last)
    flops = 2 * channels * channels * 9 * size * size
    with torch.no_grad():
        forward = flops / fastest(lambda: F.conv2d(x, w, padding=1), cpu, budget_s)
    xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
    grad_out = torch.ones_like(x)  # 3×3, padding 1: the output has the input's shape

    def forward_backward() -> None:  # fresh gradients each call: no accumulation into .grad
        torch.autograd.grad(F.conv2d(xg, wg, padding=1), (xg, wg), grad_out)

    return forward, 3 * flops / fastest(forward_backward, cpu, budget_s)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="128,224", help="comma list of crop sizes")
    ap.add_argument("--width", type=int, default=64, help="base width (paper: 64)")
    ap.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget", type=float, default=1.0, help="seconds per measurement")
    ap.add_argument("--save", action="store_true",
                    help="also write the output to bench/results/conv_ceiling_cpu<threads>.txt")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    with saved_output(f"conv_ceiling_cpu{args.threads}" if args.save else None):
        peak = matmul_peak(dtype, "cpu", budget_s=args.budget)
        print(f"{args.threads} threads, torch {torch.__version__}; measured {peak}")
        print("size  level  channels  at     forward GFLOP/s (share)   fwd+bwd GFLOP/s (share)")
        for size in (int(s) for s in args.sizes.split(",")):
            flops, seconds = 0.0, 0.0
            for level, k in enumerate(LEVEL_WIDTHS):
                c, s = args.width * k, size >> level
                fwd, both = conv_rates(c, s, dtype, args.budget)
                print(f"{size:4d}  {level:5d}  {c:8d}  {s:3d}²  {fwd / 1e9:10.0f} "
                      f"({peak.share(fwd):4.0%})        {both / 1e9:10.0f} "
                      f"({peak.share(both):4.0%})", flush=True)
                level_flops = c * c * s * s  # the level's share of the U-Net's 3×3 FLOPs
                flops, seconds = flops + level_flops, seconds + level_flops / both
            print(f"RESULT conv ceiling {size}² {args.dtype}: the levels' forward + backward, "
                  f"weighted by their FLOPs, run at {peak.share(flops / seconds):.0%} of the "
                  f"{args.dtype} matmul peak: a training step made of these convolutions "
                  "cannot exceed it", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
