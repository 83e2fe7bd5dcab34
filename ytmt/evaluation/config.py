"""params.yaml sections ``evaluate`` and ``register``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EvaluateConfig:
    protocols: tuple[str, ...] = ("paper", "strict")


@dataclass(frozen=True)
class RegisterConfig:
    model_name: str = "ytmt"
