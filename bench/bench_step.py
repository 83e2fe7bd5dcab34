"""One generator training step of full-width YTMT-UCS: ours vs the authors' structure.

A step = hypercolumn + forward + reconstruction, perceptual (T and R) and exclusion losses +
backward + Adam update, batch 1 at 128×128 (``--size``). The baseline
(``bench/baseline_ytmt.py``) runs the same weights and math organised as the authors run
it; the bench first checks both give the same loss, then times them interleaved so machine
load hits both alike, and prints seconds per step, images/s and the speed-up.

    python bench/bench_step.py                      # CPU, 128×128
    python bench/bench_step.py --device cuda        # GPU: + bf16 autocast, torch.compile
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ytmt  # noqa: E402
from baseline_ytmt import BaselineUNet, baseline_step  # noqa: E402
from ytmt.config import LossConfig  # noqa: E402
from ytmt.losses import SeparationLoss  # noqa: E402


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-compile", action="store_true", help="GPU: skip torch.compile")
    args = ap.parse_args()
    dev = args.device
    torch.manual_seed(0)
    cfg = LossConfig()
    vgg = ytmt.load_vgg19("random").to(dev)
    model = ytmt.build_model("ytmt-ucs", width=args.width, vgg=vgg).to(dev)
    base_unet = BaselineUNet(model.stage1)
    crit = SeparationLoss(cfg, vgg)
    shape = (args.batch, 3, args.size, args.size)
    batch = [torch.rand(shape, device=dev) for _ in range(3)]
    params = model.trainable_parameters()
    opt = torch.optim.Adam(params, lr=1e-4)

    def baseline() -> torch.Tensor:
        loss = baseline_step(model, vgg, base_unet, batch, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        return loss

    # ours: factorised hypercolumn conv (the library default) and batched perceptual VGG;
    # on GPU also channels_last, fused stream convs, bf16 autocast and torch.compile
    # (channels_last measured slower on the 2-core CPU).
    gpu = dev == "cuda"
    layout = torch.channels_last if gpu else torch.contiguous_format
    fast_model = ytmt.build_model("ytmt-ucs", width=args.width, vgg=vgg,
                                  fuse_streams=gpu).to(dev)
    fast_model.load_state_dict(model.state_dict())
    fast_model = fast_model.to(memory_format=layout)
    fast_opt = torch.optim.Adam(fast_model.trainable_parameters(), lr=1e-4)
    cl_batch = [b.contiguous(memory_format=layout) for b in batch]
    forward = fast_model
    if gpu and not args.no_compile:
        forward = torch.compile(fast_model)

    def ours() -> torch.Tensor:
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=gpu):
            t_hat, r_hat = forward(cl_batch[0])
            terms = crit(t_hat.float(), r_hat.float(), cl_batch[1], cl_batch[2], cl_batch[0])
        fast_opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        return terms["total"]

    # same math: identical loss before any update (fp32 path)
    with torch.no_grad():
        ref = baseline_step(model, vgg, base_unet, batch, cfg)
        t_hat, r_hat = fast_model(cl_batch[0])
        mine = crit(t_hat, r_hat, *cl_batch[1:], cl_batch[0])["total"]
    rel = abs(float(ref) - float(mine)) / abs(float(ref))
    print(f"same loss check: baseline {float(ref):.6f} ours {float(mine):.6f} (rel diff {rel:.1e})")
    if rel > 1e-3:
        sys.exit("FAILED: the two implementations disagree")

    times: dict[str, list[float]] = {"baseline": [], "ours": []}
    for name, fn in (("baseline", baseline), ("ours", ours)):  # warm-up (and compile)
        fn()
    for _ in range(args.steps):
        for name, fn, o in (("baseline", baseline, opt), ("ours", ours, fast_opt)):
            sync(dev)
            start = time.perf_counter()
            fn()
            o.step()
            sync(dev)
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    mode = ("factorised hypercolumn conv, bf16 autocast, channels_last, torch.compile"
            if gpu else "factorised hypercolumn conv, fp32")
    print(f"ytmt-ucs width {args.width}, batch {args.batch}, {args.size}x{args.size}, {dev}, "
          f"threads {torch.get_num_threads()}")
    for k in ("baseline", "ours"):
        print(f"  {k:9s} {med[k]:.3f} s/step  {args.batch / med[k]:.2f} images/s"
              + (f"  ({mode})" if k == "ours" else "  (authors' structure, fp32)"))
    print(f"speed-up ours/baseline: {med['baseline'] / med['ours']:.2f}x")


if __name__ == "__main__":
    main()
