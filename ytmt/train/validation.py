"""Validation of a training run: every metric of :data:`VAL_KEYS` summed over this rank's
validation images, and a few of them kept for the sample grid. The metrics are the
evaluation's (:func:`ytmt.metrics.score_images`), named ``val_<key>``."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ytmt.inference import pad_to_multiple
from ytmt.metric_names import REAL_VALIDATION_PREFIX, VALIDATION_PREFIX
from ytmt.metrics import PROTOCOLS, metric_names, score_images

# Validation metrics: ``val_`` + the evaluation's keys (ytmt.metrics.score_images), both
# protocols; val_psnr_t_input / val_ssim_t_input are the identity baseline (T̂ = input), the
# score a model must beat.
VAL_KEYS = tuple(f"{VALIDATION_PREFIX}{k}" for k in metric_names(PROTOCOLS))
# The same metrics on the held-out real pairs (the shards' ``real_val`` split, params
# ``data.real_val``), when the shards have them: what the champion is chosen on then.
REAL_PREFIX = REAL_VALIDATION_PREFIX
VAL_REAL_KEYS = tuple(f"{REAL_PREFIX}{k}" for k in metric_names(PROTOCOLS))
SAMPLE_COLUMNS = ("input", "T_hat", "R_hat", "T", "R")  # of the sample grid


def hwc(x: Tensor) -> np.ndarray:
    """(3,H,W) tensor in [0,1] → (H,W,3) float32 numpy, clipped to [0,1]."""
    return x.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def validate(model: nn.Module, loader: DataLoader, device: torch.device,
             keep_samples: int, prefix: str = "val_"
             ) -> tuple[dict[str, float], list[list[np.ndarray]]]:
    """Sums of every metric over this rank's validation images, named ``prefix`` + the
    evaluation's key (:data:`VAL_KEYS`; :data:`VAL_REAL_KEYS` with :data:`REAL_PREFIX`),
    their count (``n``), and up to ``keep_samples`` rows (input, T̂, R̂, T, R) for the
    sample grid. A real pair's R target ``I − T`` is clipped to [0, 1] for scoring, as the
    evaluation scores benchmarks."""
    sums: dict[str, float] = defaultdict(float)
    samples: list[list[np.ndarray]] = []
    model.eval()
    with torch.no_grad():
        for batch in loader:
            mixture = batch["mixture"].to(device)
            # padded to a multiple of 16 and cropped back, as ytmt.inference.separate does
            height, width = mixture.shape[-2:]
            t_hat, r_hat = model(pad_to_multiple(mixture))
            t_hat, r_hat = t_hat[..., :height, :width], r_hat[..., :height, :width]
            for i in range(mixture.shape[0]):
                m, th, rh = hwc(mixture[i]), hwc(t_hat[i]), hwc(r_hat[i])
                t, r = hwc(batch["transmission"][i]), hwc(batch["reflection"][i])
                for key, value in score_images(th, rh, m, t, r, PROTOCOLS).items():
                    sums[f"{prefix}{key}"] += value
                sums["n"] += 1
                if len(samples) < keep_samples:
                    samples.append([m, th, rh, t, r])
    model.train()
    return sums, samples
