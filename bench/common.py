"""Shared by the benches: the machine's matmul peak measured in the same run, and ``--save``.

The peak of a dtype is the best rate of large square matmuls (``2·n³`` FLOPs each) run two
ways, whichever is faster: ``torch.matmul`` and, on CPU, the same GEMM as a 1×1 convolution
(oneDNN). On AMD CPUs the two differ by about 2× in fp32: the BLAS torch links dispatches
AVX2 code there while oneDNN, which also runs the model's convolutions, uses AVX-512. Each
size runs for a fixed time budget and the fastest repetition counts, so the peak is what the
machine can do when it is not disturbed; step times are compared with it the same way
(fastest step), and against each other by their medians. The rate of a plain 2048²
``torch.matmul`` (the issue's reference figure) is kept beside the peak and reported too.
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

RESULTS = Path(__file__).resolve().parent / "results"
PEAK_SIZES = (2048, 3072, 4096)


REFERENCE = "torch.matmul 2048²"


@dataclass(frozen=True)
class Peak:
    """Best measured matmul rate of ``dtype`` (FLOP/s), the GEMM that reached it, and the
    rate of the reference GEMM (:data:`REFERENCE`)."""

    dtype: str
    flops_per_s: float
    how: str
    reference: float

    def share(self, flops_per_s: float) -> float:
        return flops_per_s / self.flops_per_s

    def share_of_reference(self, flops_per_s: float) -> float:
        return flops_per_s / self.reference

    def best(self, other: Peak | None) -> Peak:
        """The higher of two measurements of the same dtype (the reference too): the
        machine's peak is what it reached when it was least disturbed."""
        if other is None:
            return self
        top = max(self, other, key=lambda p: p.flops_per_s)
        return Peak(self.dtype, top.flops_per_s, top.how, max(self.reference, other.reference))

    def __str__(self) -> str:
        return (f"{self.dtype} peak {self.flops_per_s / 1e9:.0f} GFLOP/s ({self.how}; "
                f"{REFERENCE} {self.reference / 1e9:.0f})")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def fastest(fn: Callable[[], object], device: torch.device, budget_s: float,
            min_reps: int = 2) -> float:
    """Seconds of the fastest of the runs of ``fn`` that fit in ``budget_s`` (after one
    warm-up run), at least ``min_reps`` of them."""
    fn()
    sync(device)
    best, start, reps = float("inf"), time.perf_counter(), 0
    while reps < min_reps or time.perf_counter() - start < budget_s:
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
        reps += 1
    return best


def matmul_peak(dtype: torch.dtype, device: str | torch.device = "cpu",
                sizes: tuple[int, ...] = PEAK_SIZES, budget_s: float = 1.0) -> Peak:
    """The best FLOP/s of ``n×n @ n×n`` in ``dtype`` over ``sizes`` (module docstring)."""
    device = torch.device(device)
    name = str(dtype).removeprefix("torch.").replace("bfloat16", "bf16").replace(
        "float32", "fp32")
    rates: dict[str, float] = {}
    gen = torch.Generator().manual_seed(0)
    for n in sorted({*sizes, 2048}):  # 2048: the reference
        a = torch.randn(n, n, generator=gen).to(device, dtype)
        b = torch.randn(n, n, generator=gen).to(device, dtype)
        ways = {f"torch.matmul {n}²": lambda a=a, b=b: a @ b}
        if device.type == "cpu":  # (1,n,n,1)·W(n,n,1,1) channels-last: a GEMM in oneDNN
            x = a.t().reshape(1, n, n, 1).contiguous(memory_format=torch.channels_last)
            w = b.t().reshape(n, n, 1, 1).contiguous()
            ways[f"oneDNN GEMM {n}² (1×1 conv)"] = lambda x=x, w=w: F.conv2d(x, w)
        with torch.no_grad():
            for how, fn in ways.items():
                rates[how] = 2 * n**3 / fastest(fn, device, budget_s)
    how = max(rates, key=rates.__getitem__)
    return Peak(name, rates[how], how, rates[REFERENCE])


def count_flops(step: Callable[[], object]) -> float:
    """FLOPs of one call of ``step`` (matmuls and convolutions, forward and backward, as
    ``torch.utils.flop_counter`` counts them)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return float(counter.get_total_flops())


class _Tee(io.TextIOBase):
    def __init__(self, *streams) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for s in self.streams:
            s.write(text)
            s.flush()
        return len(text)


@contextlib.contextmanager
def saved_output(name: str | None) -> Iterator[None]:
    """Print as usual; with ``name`` also write everything printed to
    ``bench/results/<name>.txt`` (written when the bench ends)."""
    if not name:
        yield
        return
    buf = io.StringIO()
    out = sys.stdout
    sys.stdout = _Tee(out, buf)
    try:
        yield
    finally:
        sys.stdout = out
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"{name}.txt"
        path.write_text(buf.getvalue())
        print(f"raw output: {path}")
