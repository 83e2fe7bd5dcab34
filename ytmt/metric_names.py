"""The names of the image metrics (no numpy, no scikit-image: params validation imports it).

:func:`ytmt.metrics.score_images` returns one value per :func:`metric_names` key; training
logs them every epoch prefixed ``val_`` (:func:`validation_metrics`, ``ytmt.train.validation``),
the names that ``tune.metric`` and ``register.metric`` choose from.
"""

from __future__ import annotations

from typing import Literal

Protocol = Literal["paper", "strict"]
PROTOCOLS: tuple[Protocol, ...] = ("paper", "strict")
LAYERS = ("t", "r")  # transmission, reflection
VALIDATION_PREFIX = "val_"  # the synthetic validation split
REAL_VALIDATION_PREFIX = "val_real_"  # held-out real pairs (data.real_val), when there are some


def metric_name(metric: str, layer: str, protocol: str) -> str:
    """``psnr_t``, ``ssim_r_strict``, ...: the paper protocol carries no suffix."""
    return f"{metric}_{layer}" + ("" if protocol == "paper" else f"_{protocol}")


def metric_names(protocols: tuple[str, ...] = PROTOCOLS) -> list[str]:
    """The keys of :func:`ytmt.metrics.score_images` for ``protocols``, in order."""
    names = [metric_name(m, layer, p) for p in protocols for layer in LAYERS
             for m in ("psnr", "ssim")]
    return names + ["psnr_t_input", "ssim_t_input"]


def validation_metrics() -> tuple[str, ...]:
    """Every validation metric a training run logs each epoch: ``val_psnr_t`` ... on the
    synthetic split, ``val_real_psnr_t`` ... on held-out real pairs."""
    return tuple(prefix + k for prefix in (VALIDATION_PREFIX, REAL_VALIDATION_PREFIX)
                 for k in metric_names(PROTOCOLS))
