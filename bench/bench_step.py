"""One generator training step of full-width YTMT-UCS: ours in fp32 and bf16 vs the authors'
structure, with the share of the machine's matmul peak.

A step = hypercolumn + forward + reconstruction, perceptual (T and R) and exclusion losses +
backward + Adam update, batch 1 (``--batch``), at each of ``--sizes``. "ours" is the training
loop's own step (``ytmt.train.step``: ``build_step``, ``train_step``; GAN off) at
``train.precision`` fp32 and bf16; the baseline (``bench/baseline_ytmt.py``) runs the same
weights and math organised as the authors run it, in fp32.

"ours" runs channels-last (``train.channels_last: true``; ``--no-channels-last`` for NCHW),
which does 1.1-1.2× less work per step on this CPU. Per size the bench:

1. checks the first step's loss: the baseline and ours in fp32 must agree to 1e-3, ours in
   bf16 and in fp32 to 0.5 % (it fails otherwise), and prints both differences;
2. times the modes interleaved, so machine load hits all alike: seconds per step (median
   and fastest), CPU seconds per step (all threads: the work, which load blurs less than
   wall time), images/s, speed-up over the baseline (medians; also by fastest step and by
   CPU time);
3. counts each mode's FLOPs (``bench.common.count_flops``: forward + backward convolutions
   and matmuls as executed) and gives the share of the matmul peak of the mode's dtype,
   measured in the same run, before and after each size's timing, the best counting
   (``bench.common.matmul_peak``; fastest step vs fastest GEMM).

    python bench/bench_step.py                  # CPU, 2 threads, 128² and 224² (README rows)
    python bench/bench_step.py --save           # + raw output in bench/results/step_cpu2.txt
    python bench/bench_step.py --batch 4 --steps 3   # the default per-worker training batch
    python bench/bench_step.py --profile /tmp/p --sizes 128   # + top kernels per mode
    python bench/bench_step.py --device cuda --sizes 224 --batch 8 --compile   # GPU
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline_ytmt import BaselineUNet, baseline_step  # noqa: E402
from bench_train import profile  # noqa: E402
from common import Peak, count_flops, matmul_peak, saved_output, sync  # noqa: E402

from ytmt.config import to_dict  # noqa: E402
from ytmt.params import Params, resolve_params  # noqa: E402
from ytmt.precision import autocast  # noqa: E402
from ytmt.train.components import build_components, make_optimizer  # noqa: E402
from ytmt.train.step import build_step, train_step  # noqa: E402

LOSS_AGREEMENT = {"fp32": 1e-3, "bf16": 5e-3}  # relative first-step loss vs the fp32 reference


@dataclass
class Mode:
    """A timed step: ``step()`` updates the weights; ``first_loss()`` is the loss before any
    update (no gradients); ``precision`` is the resolved compute dtype."""

    label: str
    precision: str
    step: object
    first_loss: object
    flops: float = 0.0


def _batch(size: int, batch: int, device: torch.device, fmt) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    shape = (batch, 3, size, size)
    t = (torch.rand(shape, generator=g) * 0.6).to(device).contiguous(memory_format=fmt)
    r = (torch.rand(shape, generator=g) * 0.4).to(device).contiguous(memory_format=fmt)
    return (t + r).clamp(0, 1), t, r


def _params(args, precision: str, compiled: bool):
    return resolve_params(to_dict(Params()), {
        "model.width": args.width, "model.vgg_weights": "random", "train.gan": False,
        "train.precision": precision, "train.channels_last": args.channels_last,
        "train.fuse_streams": args.fuse_streams, "train.compile": compiled})


def ours(args, size: int, precision: str) -> Mode:
    """The training loop's step at ``train.precision: precision`` (seeded: same weights)."""
    device = torch.device(args.device)
    params = _params(args, precision, compiled=args.compile)
    cfg = params.train
    parts = build_components(params, "ytmt-ucs")
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = parts.model.to(device, memory_format=fmt)
    criterion = parts.criterion
    train = build_step(parts, model, cfg, device)
    batch = _batch(size, args.batch, device, fmt)
    resolved = train.precision

    def step():
        return train_step(train, batch)["total"]

    def first_loss() -> float:
        with torch.no_grad(), autocast(device, resolved):
            t_hat, r_hat = model(batch[0])
            return float(criterion(t_hat.float(), r_hat.float(), *batch[1:], batch[0])["total"])

    extra = ", channels_last" if cfg.channels_last else ""
    return Mode(f"ours {resolved}{extra}", resolved, step, first_loss)


def authors(args, size: int) -> Mode:
    """The authors' structure in fp32 with the same initial weights as :func:`ours`."""
    device = torch.device(args.device)
    params = _params(args, "fp32", compiled=False)
    parts = build_components(params, "ytmt-ucs")
    model, vgg = parts.model.to(device), parts.vgg
    unet = BaselineUNet(model.stage1)
    opt = make_optimizer(model.trainable_parameters(), params.train, device)
    batch = _batch(size, args.batch, device, torch.contiguous_format)

    def step():
        loss = baseline_step(model, vgg, unet, batch, params.loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    def first_loss() -> float:
        with torch.no_grad():
            return float(baseline_step(model, vgg, unet, batch, params.loss))

    return Mode("authors' structure fp32", "fp32", step, first_loss)


def check_losses(modes: list[Mode]) -> str:
    """First-step losses: baseline vs ours fp32 (1e-3), ours bf16 vs ours fp32 (0.5 %)."""
    losses = [m.first_loss() for m in modes]
    ref = losses[1]  # ours fp32
    parts = []
    for m, loss in zip(modes, losses, strict=True):
        rel = abs(loss - ref) / abs(ref)
        if m is not modes[1]:
            parts.append(f"{m.label} {rel:.2e}")
        if rel > LOSS_AGREEMENT[m.precision]:
            sys.exit(f"FAILED: first-step loss of {m.label} is {loss:.6f}, ours fp32 "
                     f"{ref:.6f} (relative difference {rel:.2e})")
    print(f"  first-step loss {ref:.6f} (ours fp32); relative differences: "
          + ", ".join(parts), flush=True)
    return parts[-1].rsplit(" ", 1)[-1]


@dataclass
class Timing:
    """Wall-clock and CPU seconds (all threads) of each step of one mode."""

    wall: list[float]
    cpu: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def fastest(self) -> float:
        return min(self.wall)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)


def time_modes(modes: list[Mode], steps: int, device: torch.device) -> list[Timing]:
    """Each mode's steps, run interleaved after one warm-up step each."""
    for m in modes:
        m.step()
    timings = [Timing([], []) for _ in modes]
    for _ in range(steps):
        for m, t in zip(modes, timings, strict=True):
            sync(device)
            start, cpu = time.perf_counter(), time.process_time()
            m.step()
            sync(device)
            t.wall.append(time.perf_counter() - start)
            t.cpu.append(time.process_time() - cpu)
    return timings


def measure_peaks(device: torch.device, peaks: dict[str, Peak] | None = None
                  ) -> dict[str, Peak]:
    """fp32 and bf16 matmul peaks, measured now, each the best of now and ``peaks``."""
    peaks = peaks or {}
    return {p: matmul_peak(dtype, device).best(peaks.get(p))
            for p, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}


def run_size(args, size: int, peaks: dict[str, Peak]) -> dict[str, Peak]:
    """Check, time and report one size; returns the peaks re-measured after timing (the
    best of before and after, so a busy moment does not lower the peak)."""
    device = torch.device(args.device)
    print(f"ytmt-ucs width {args.width}, batch {args.batch}, {size}x{size}, {device.type}, "
          f"{torch.get_num_threads()} threads", flush=True)
    modes = [authors(args, size), ours(args, size, "fp32"), ours(args, size, "bf16")]
    bf16_diff = check_losses(modes)
    for m in modes:
        m.flops = count_flops(m.step)
    timings = time_modes(modes, args.steps, device)
    peaks = measure_peaks(device, peaks)
    print(f"  measured {peaks['fp32']}, {peaks['bf16']}")
    base = timings[0]
    for m, t in zip(modes, timings, strict=True):
        rate = m.flops / t.fastest
        print(f"  {m.label:28s} {t.median:7.3f} s/step (fastest {t.fastest:.3f}, CPU "
              f"{t.cpu_median:.2f} s)  {args.batch / t.median:6.2f} images/s  "
              f"{m.flops / 1e9:6.1f} GFLOP  {rate / 1e9:4.0f} GFLOP/s = "
              f"{peaks[m.precision].share(rate):4.0%} of the {m.precision} peak  "
              f"x{base.median / t.median:.2f}", flush=True)
        if args.profile:
            profile(m.step, device, args.profile_steps, args.profile, f"{size} {m.label}")
    fast, t = modes[-1], timings[-1]
    rate = fast.flops / t.fastest
    print(f"RESULT step {size}x{size} batch {args.batch} {device.type} "
          f"{torch.get_num_threads()} threads: {fast.label} {base.median / t.median:.2f}x the "
          f"authors' structure ({t.median:.3f} vs {base.median:.3f} s/step, "
          f"{args.batch / t.median:.2f} images/s; fastest steps "
          f"x{base.fastest / t.fastest:.2f}, CPU time x{base.cpu_median / t.cpu_median:.2f}), "
          f"{peaks[fast.precision].share(rate):.0%} of the bf16 matmul peak "
          f"({peaks[fast.precision].share_of_reference(rate):.0%} of a 2048² torch.matmul); "
          f"first-step loss bf16 vs fp32 {bf16_diff}", flush=True)
    return peaks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="128,224", help="comma list of square crop sizes")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per mode")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (0: torch default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                    help="ours: NCHW instead of channels-last weights and batches")
    ap.add_argument("--fuse-streams", action="store_true", help="ours: grouped stream convs")
    ap.add_argument("--compile", action="store_true", help="ours: torch.compile (inductor)")
    ap.add_argument("--profile", metavar="DIR", default=None,
                    help="profile each mode: top kernels, conv/matmul share, Chrome trace")
    ap.add_argument("--profile-steps", type=int, default=2)
    ap.add_argument("--save", action="store_true",
                    help="also write the output to bench/results/step_<device><threads>.txt")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = f"step_{device.type}{torch.get_num_threads()}" if args.save else None
    with saved_output(name):
        peaks = measure_peaks(device)
        print(f"torch {torch.__version__}; measured {peaks['fp32']}, {peaks['bf16']}")
        for size in (int(s) for s in args.sizes.split(",")):
            peaks = run_size(args, size, peaks)


if __name__ == "__main__":
    main()
