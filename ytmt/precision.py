"""Compute precision of training, evaluation, ``ytmt separate`` and serving: one resolver.

``precision`` is ``auto``, ``fp32`` or ``bf16``. ``bf16`` runs the network, the VGG-19
features and the losses under bf16 autocast; weights, optimiser state, checkpoints and the
validation metrics stay fp32. ``auto`` is ``bf16`` where the device computes bf16 natively
and ``fp32`` elsewhere:

- a CUDA GPU that supports bf16 (``torch.cuda.is_bf16_supported``, Ampere and later);
- a CPU with AVX-512 BF16 or AMX-BF16 (``torch.cpu.get_capabilities``); without them
  oneDNN emulates bf16 with fp32 arithmetic plus conversions.

Every caller resolves through :func:`resolve_precision` and records the resolved value.
Torch is imported inside the functions: the params (and so the cheap, torch-free ``scan``
stage) import :data:`Precision` from here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

Precision = Literal["auto", "fp32", "bf16"]
Resolved = Literal["fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
# `ytmt separate`, serving and training: bf16 where the device computes it natively
DEFAULT_PRECISION = "auto"
# CPU instruction sets (torch.cpu.get_capabilities keys) that compute bf16 natively.
CPU_BF16_FEATURES = ("avx512_bf16", "amx_bf16")


def cpu_computes_bf16(capabilities: Mapping[str, Any]) -> bool:
    """Whether a CPU with these ``torch.cpu.get_capabilities()`` has native bf16 math."""
    return any(bool(capabilities.get(k)) for k in CPU_BF16_FEATURES)


def bf16_native(device: str | torch.device) -> bool:
    """Whether ``device`` (cpu, cuda, cuda:1, ...) computes bf16 natively."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(
            including_emulation=False)
    if device.type == "cpu":
        return cpu_computes_bf16(torch.cpu.get_capabilities())
    return False


def resolve_precision(precision: str, device: str | torch.device) -> Resolved:
    """``auto`` → ``bf16`` where :func:`bf16_native` holds for ``device``, else ``fp32``;
    ``fp32`` and ``bf16`` are returned as they are. Anything else is a ValueError."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision = {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if bf16_native(device) else "fp32"
    if precision == "bf16" and not bf16_native(device):
        import logging

        from ytmt.logs import warn_once

        warn_once(logging.getLogger(__name__),
                  f"precision = 'bf16' on {device}, which has no native bf16 (a CPU without "
                  "AVX-512 BF16 or AMX: oneDNN emulates it); expect it to run many times "
                  "slower than fp32 (30x for the VGG-19 hypercolumn on an AVX2 CPU); 'auto' "
                  "picks fp32 here")
    return precision  # type: ignore[return-value]


def autocast(device: str | torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` for a resolved ``bf16``; nothing for ``fp32``."""
    import torch

    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise ValueError(f"precision = {precision!r}: resolve it first (resolve_precision)")
    return contextlib.nullcontext()


def configure_cuda(device: str | torch.device, tf32: bool) -> None:
    """Process-wide CUDA settings of a training worker on ``device`` (nothing elsewhere):
    cuDNN autotuning (``cudnn.benchmark``: training crops have one fixed size, so each conv's
    fastest algorithm is searched once) and TF32 for fp32 matmuls and convolutions on or off
    (``tf32`` False: IEEE fp32; torch's own default allows TF32 in cuDNN convs only). Under
    bf16 autocast it touches only the work that stays fp32."""
    import torch

    if torch.device(device).type != "cuda":
        return
    torch.backends.cudnn.benchmark = True
    precision = "tf32" if tf32 else "ieee"
    torch.backends.cuda.matmul.fp32_precision = precision
    torch.backends.cudnn.conv.fp32_precision = precision
