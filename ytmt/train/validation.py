"""Validation of a training run: every metric of :data:`VAL_KEYS` summed over this rank's
validation images, and a few of them kept for the sample grid."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

PROTOCOLS = ("paper", "strict")
# Validation metrics; the paper protocol carries no suffix. val_psnr_t_input is the identity
# baseline (T̂ = input), the score a model must beat.
VAL_KEYS = tuple(f"val_{m}_{layer}{'' if p == 'paper' else '_' + p}"
                 for p in PROTOCOLS for layer in ("t", "r") for m in ("psnr", "ssim")
                 ) + ("val_psnr_t_input",)

# Identical images have infinite PSNR; one such pair would make the mean infinite.
PSNR_CAP = 100.0


def hwc(x: Tensor) -> np.ndarray:
    """(3,H,W) tensor in [0,1] → (H,W,3) float32 numpy, clipped to [0,1]."""
    return x.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def validate(model: nn.Module, loader: DataLoader, device: torch.device,
             keep_samples: int) -> tuple[dict[str, float], list[list[np.ndarray]]]:
    """Sums of every VAL_KEYS metric over this rank's validation images, their count
    (``n``), and up to ``keep_samples`` rows (input, T̂, R̂, T, R) for the sample grid."""
    from ytmt.metrics import psnr_ssim

    sums: dict[str, float] = defaultdict(float)
    samples: list[list[np.ndarray]] = []
    model.eval()
    with torch.no_grad():
        for batch in loader:
            mixture = batch["mixture"].to(device)
            t_hat, r_hat = model(mixture)
            for i in range(mixture.shape[0]):
                m, th, rh = hwc(mixture[i]), hwc(t_hat[i]), hwc(r_hat[i])
                t, r = hwc(batch["transmission"][i]), hwc(batch["reflection"][i])
                for protocol in PROTOCOLS:
                    suffix = "" if protocol == "paper" else f"_{protocol}"
                    for layer, pred, target in (("t", th, t), ("r", rh, r)):
                        psnr, ssim = psnr_ssim(pred, target, protocol=protocol)
                        sums[f"val_psnr_{layer}{suffix}"] += min(psnr, PSNR_CAP)
                        sums[f"val_ssim_{layer}{suffix}"] += ssim
                sums["val_psnr_t_input"] += min(psnr_ssim(m, t, protocol="paper")[0], PSNR_CAP)
                sums["n"] += 1
                if len(samples) < keep_samples:
                    samples.append([m, th, rh, t, r])
    model.train()
    return sums, samples
