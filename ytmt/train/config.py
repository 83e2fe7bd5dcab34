"""params.yaml sections ``train`` and ``tune``."""

from __future__ import annotations

from dataclasses import dataclass, field

from ytmt.config import bounded


@dataclass(frozen=True)
class TrainConfig:
    variants: list[str] = field(default_factory=lambda: ["ytmt-ucs"])
    epochs: int = bounded(2, ge=1)


@dataclass(frozen=True)
class TuneConfig:
    num_samples: int = bounded(2, ge=1)
