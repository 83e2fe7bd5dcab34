"""Training throughput (images/s) of one full training step: model forward, the whole loss
(reconstruction, perceptual through VGG-19, exclusion), backward, Adam step.

Each mode is measured in the same run and reported against the first (the baseline,
fp32 eager), so the ratios hold on any machine. Data loading is excluded (the batch is
made once on the device): this is the compute the loop does per step.

    python bench/bench_train.py                       # CPU, small model (width 8, 64 px)
    python bench/bench_train.py --gpu                 # GPU: fp32 eager vs bf16 autocast +
                                                      # channels_last + torch.compile, MFU
    python bench/bench_train.py --gpu --width 64 --crop 224 --batch 8   # the paper's scale

MFU (model FLOP utilisation) = FLOPs of one step (counted by torch.utils.flop_counter,
forward + backward) × steps/s ÷ the GPU's peak dense bf16 FLOP/s (a table of common GPUs
below, or ``--peak-tflops``), reported two ways: with the FLOPs the step executes (the
hypercolumn conv factorised), and with the FLOPs of the architecture as written (the
1475-channel hypercolumn materialised and convolved densely; PaLM's "model FLOPs", about
1.55× more for ytmt-ucs at width 64). The issue's GPU target: ≥ 2.5× the fp32 eager
throughput and ≥ 40 % MFU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import count_flops, sync  # noqa: E402

from ytmt.archs import build_model, get_variant  # noqa: E402
from ytmt.config import to_dict  # noqa: E402
from ytmt.params import Params, resolve_params  # noqa: E402
from ytmt.train.components import build_components  # noqa: E402
from ytmt.train.step import build_step, train_step  # noqa: E402

# Peak dense bf16 tensor FLOP/s (no sparsity), from the vendors' data sheets.
PEAK_BF16_TFLOPS = {
    "H200": 989.4, "H100 SXM": 989.4, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 756.0,
    "A100": 312.0, "L40S": 362.1, "L40": 181.0, "L4": 121.0, "A10G": 70.0, "A10": 125.0,
    "RTX 4090": 165.2, "RTX 3090": 71.0, "V100": 125.0,  # V100: fp16 (no bf16)
}


def peak_tflops(name: str) -> float | None:
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if key.lower() in name.lower():
            return PEAK_BF16_TFLOPS[key]
    return None


def make_step(args, device: torch.device, train: dict, lazy_hypercolumn: bool = True):
    """A closure running the training loop's step (``ytmt.train.step.train_step``, built by
    its ``build_step``) on a fixed batch, from the same params (``train.precision``,
    ``channels_last``, ``compile``, ``fuse_streams``: ``train``) as the training loop.
    ``lazy_hypercolumn=False`` materialises the 1475-channel hypercolumn and convolves it
    densely, as the architecture is written (FLOP count)."""
    params = resolve_params(to_dict(Params()), {
        "model.width": args.width, "model.vgg_weights": "random", "train.gan": False,
        "loss.exclusion": args.exclusion,
        **{f"train.{k}": v for k, v in train.items()}})
    cfg = params.train
    parts = build_components(params, args.variant)
    if not lazy_hypercolumn:
        parts.model = build_model(args.variant, width=args.width, vgg=parts.vgg,
                                  plain_layers=params.model.plain_layers,
                                  lazy_hypercolumn=False)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = parts.model.to(device, memory_format=fmt)
    g = torch.Generator().manual_seed(0)
    shape = (args.batch, 3, args.crop, args.crop)
    t = (torch.rand(shape, generator=g) * 0.6).to(device).contiguous(memory_format=fmt)
    r = (torch.rand(shape, generator=g) * 0.4).to(device).contiguous(memory_format=fmt)
    mixture = (t + r).clamp(0, 1)
    train = build_step(parts, model, cfg, device)  # the loop's own step

    def step() -> None:
        train_step(train, (mixture, t, r))

    return step


def measure(step, device: torch.device, warmup: int, iters: int) -> float:
    """Seconds per step (median of ``iters`` after ``warmup``)."""
    for _ in range(warmup):
        step()
    sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


# Kernels that run on tensor cores (GPU) or the BLAS/oneDNN paths (CPU): everything else is
# element-wise, reduction, copy or launch work, bound by memory bandwidth or overhead.
MATMUL_KERNELS = ("conv", "gemm", "mm", "cudnn", "cutlass", "wgmma", "xmma", "sm90")


def profile(step, device: torch.device, steps: int, out_dir: str, label: str) -> None:
    """Profile ``steps`` steps: print the top kernels by self time, the share of time in
    convolution/matmul kernels, and write a Chrome trace (open in chrome://tracing or
    https://ui.perfetto.dev) to ``out_dir``."""
    from pathlib import Path

    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    step()  # warm (compiled graphs, cudnn autotuning) outside the trace
    sync(device)
    with torch_profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        sync(device)
    gpu = device.type == "cuda"
    key = "self_device_time_total" if gpu else "self_cpu_time_total"
    events = prof.key_averages()
    print(events.table(sort_by=key, row_limit=25, max_name_column_width=70))
    if gpu:  # the kernels themselves, not the CPU-side ops that launched them
        from torch.autograd import DeviceType

        events = [e for e in events if e.device_type == DeviceType.CUDA]
    total = sum(getattr(e, key) for e in events)
    heavy = sum(getattr(e, key) for e in events
                if any(k in e.key.lower() for k in MATMUL_KERNELS))
    where = "device" if gpu else "CPU"
    print(f"{label}: {heavy / max(total, 1):.1%} of self {where} time in convolution/matmul "
          f"kernels, the rest element-wise, reductions, copies")
    path = Path(out_dir) / f"trace_{label.replace(' ', '').replace('+', '_')}.json.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(path))
    print(f"trace: {path}")


def mode_table(gpu: bool, compile_mode: str) -> dict[str, tuple[str, dict]]:
    """{mode: (label, train params)}; the first mode is the baseline."""
    fast = {"precision": "bf16", "channels_last": True}
    if not gpu:
        return {"eager": ("fp32 eager", {}),
                "channels_last": ("fp32 channels_last", {"channels_last": True}),
                "fused": ("fp32 fused streams", {"fuse_streams": True}),
                "bf16_nchw": ("bf16 NCHW", {"precision": "bf16"}),
                "bf16": ("bf16 + channels_last", fast)}
    compiled = {**fast, "compile": True, "compile_mode": compile_mode}
    return {"eager": ("fp32 eager", {}),
            "bf16": ("bf16 + channels_last", fast),
            "compile": ("bf16 + channels_last + compile", compiled),
            "fused": ("bf16 + cl + compile + fused streams", {**compiled, "fuse_streams": True})}


def run_modes(args, device: torch.device, modes: list[tuple[str, dict]],
              timing: tuple[int, int], flops: tuple[float, float | None],
              peak: float | None) -> None:
    """Time each (label, train params) mode; print img/s, ratio to the first, MFU."""
    (warmup, iters), (executed, arch) = timing, flops
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = False  # the baseline is true fp32
        torch.backends.cudnn.allow_tf32 = False
    base = None
    for label, train in modes:
        t0 = time.perf_counter()
        step = make_step(args, device, train)
        sec = measure(step, device, warmup, iters)
        setup = time.perf_counter() - t0 - sec * iters
        ips = args.batch / sec
        base = base or ips
        line = (f"{label:36s} {ips:9.1f} img/s  {sec * 1e3:8.1f} ms/step  "
                f"x{ips / base:5.2f} vs baseline  (setup+warm-up {setup:.0f} s)")
        if peak:
            line += f"  MFU {executed / sec / (peak * 1e12):6.1%} executed"
            if arch:
                line += f", {arch / sec / (peak * 1e12):6.1%} architecture"
            line += f" of {peak:.0f} TFLOP/s"
        print(line, flush=True)
        if args.profile:
            profile(step, device, args.profile_steps, args.profile, label)
        del step
        if device.type == "cuda":
            torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu", action="store_true", help="CUDA: fp32 eager vs bf16+compile")
    ap.add_argument("--variant", default="ytmt-ucs")
    ap.add_argument("--width", type=int, default=None, help="default: 8 on CPU, 64 on GPU")
    ap.add_argument("--crop", type=int, default=None, help="default: 64 on CPU, 224 on GPU")
    ap.add_argument("--batch", type=int, default=None, help="default: 4 on CPU, 16 on GPU")
    ap.add_argument("--exclusion", type=float, default=1.0, help="loss.exclusion weight")
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--modes", default=None,
                    help="comma list of modes to run (default: all); the first is the baseline: "
                         "eager, channels_last, fused, bf16_nchw, bf16 (CPU); eager, bf16, "
                         "compile, fused (GPU)")
    ap.add_argument("--compile-mode", default="default",
                    help="train.compile_mode of the 'compile' mode: default, max-autotune, "
                         "reduce-overhead (CUDA graphs), max-autotune-no-cudagraphs")
    ap.add_argument("--profile", metavar="DIR", default=None,
                    help="after timing, profile each mode for --profile-steps steps: top "
                         "kernels, conv/matmul share of the time, Chrome trace in DIR")
    ap.add_argument("--profile-steps", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="peak dense bf16 TFLOP/s of the GPU (default: from a table)")
    args = ap.parse_args(argv)
    gpu = args.gpu
    if gpu and not torch.cuda.is_available():
        ap.error("--gpu: CUDA is not available")
    device = torch.device("cuda" if gpu else "cpu")
    args.width = args.width or (64 if gpu else 8)
    args.crop = args.crop or (224 if gpu else 64)
    args.batch = args.batch or (16 if gpu else 4)
    warmup = args.warmup if args.warmup is not None else (5 if gpu else 1)
    iters = args.iters or (20 if gpu else 5)
    modes = mode_table(gpu, args.compile_mode)
    picked = args.modes.split(",") if args.modes else list(modes)
    unknown = [m for m in picked if m not in modes]
    if unknown:
        ap.error(f"--modes: unknown {unknown}; choose from {', '.join(modes)}")
    name = torch.cuda.get_device_name() if gpu else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{args.variant} width {args.width}, {args.batch}x3x{args.crop}x{args.crop}, "
          f"{name}, torch {torch.__version__}")
    # Executed FLOPs: the step as it runs (the hypercolumn conv factorised). Architecture
    # FLOPs: the same step with the 1475-channel hypercolumn materialised and convolved
    # densely, as the network is written (PaLM's "model FLOPs"); same function, more FLOPs.
    flops = count_flops(make_step(args, device, {}))
    arch = (count_flops(make_step(args, device, {}, lazy_hypercolumn=False))
            if get_variant(args.variant).stages == 1 else None)
    print(f"FLOPs per training step: {flops / 1e9:.1f} GFLOP executed "
          f"({flops / args.batch / 1e9:.2f} per image)"
          + (f", {arch / 1e9:.1f} GFLOP as the architecture is written "
             f"({arch / args.batch / 1e9:.2f} per image)" if arch else ""))
    peak = args.peak_tflops or (peak_tflops(name) if gpu else None)
    run_modes(args, device, [modes[k] for k in picked], (warmup, iters), (flops, arch), peak)
    if gpu and not peak:
        print(f"no peak bf16 FLOP/s known for {name!r}: pass --peak-tflops for MFU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
