"""The sweep's search space: declared in ``params.yaml`` (``tune.space``), checked at once.

A space maps dotted loss-weight keys to a distribution::

    loss.perceptual: {type: loguniform, low: 0.01, high: 1.0}   # λ1
    loss.exclusion:  {type: choice, values: [0.5, 1.0, 2.0]}    # λ2
    loss.rec_t_mse:  {type: uniform, low: 0.1, high: 0.5}       # a
    loss.adversarial: {type: grid, values: [0.0, 0.01]}         # λ3, every value tried

Tunable keys are the seven scalar weights of ``L = a·MSE_T + b·MSE_R + c·L1(∇T) + d·L1(T+R, I)
+ λ1·L_per + λ2·L_exc + λ3·L_adv`` (:data:`TUNABLE_LOSS_KEYS`). Every weight is >= 0.

:func:`validate_space` is pure Python (no Ray import) so ``load_params`` rejects a bad space
in milliseconds; :func:`to_tune_space` turns a valid space into Ray Tune's ``param_space``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ytmt.config import ConfigError

# key -> the symbol it has in the paper / design.md
TUNABLE_LOSS_KEYS: dict[str, str] = {
    "loss.rec_t_mse": "a",
    "loss.rec_r_mse": "b",
    "loss.rec_t_grad": "c",
    "loss.rec_sum_l1": "d",
    "loss.perceptual": "λ1",
    "loss.exclusion": "λ2",
    "loss.adversarial": "λ3",
}

# distribution type -> the fields it takes (all required)
DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "uniform": ("low", "high"),
    "loguniform": ("low", "high"),
    "choice": ("values",),
    "grid": ("values",),
}


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"space.{key} = {value!r}: expected a finite number")
    return float(value)


def _check_one(key: str, spec: Any) -> None:
    if not isinstance(key, str) or not key.startswith("loss."):
        raise ConfigError(
            f"space.{key}: only loss weights can be tuned (keys 'loss.<weight>'); "
            f"tunable keys: {', '.join(TUNABLE_LOSS_KEYS)}")
    if key not in TUNABLE_LOSS_KEYS:
        raise ConfigError(
            f"space.{key}: unknown or non-tunable loss key; tunable keys: "
            f"{', '.join(TUNABLE_LOSS_KEYS)}")
    if not isinstance(spec, Mapping):
        raise ConfigError(f"space.{key} = {spec!r}: expected a mapping like "
                          "{type: loguniform, low: 0.01, high: 1.0}")
    kind = spec.get("type")
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"space.{key}.type = {kind!r}: unknown distribution; expected one of "
                          f"{', '.join(DISTRIBUTIONS)}")
    wanted = set(DISTRIBUTIONS[kind]) | {"type"}
    extra = sorted(set(spec) - wanted)
    missing = sorted(wanted - set(spec))
    if extra:
        raise ConfigError(f"space.{key}.{extra[0]}: not a field of a {kind} distribution; "
                          f"its fields: {', '.join(DISTRIBUTIONS[kind])}")
    if missing:
        raise ConfigError(f"space.{key}: a {kind} distribution needs {', '.join(missing)}")
    if kind in ("uniform", "loguniform"):
        low = _number(f"{key}.low", spec["low"])
        high = _number(f"{key}.high", spec["high"])
        if low >= high:
            raise ConfigError(f"space.{key}: low = {low} must be < high = {high}")
        if low < 0:
            raise ConfigError(f"space.{key}.low = {low}: loss weights must be >= 0")
        if kind == "loguniform" and low <= 0:
            raise ConfigError(f"space.{key}.low = {low}: a loguniform distribution needs "
                              "low > 0 (use uniform to include 0)")
    else:
        values = spec["values"]
        if not isinstance(values, (list, tuple)) or not values:
            raise ConfigError(f"space.{key}.values = {values!r}: expected a non-empty list")
        for i, v in enumerate(values):
            if _number(f"{key}.values[{i}]", v) < 0:
                raise ConfigError(f"space.{key}.values[{i}] = {v}: loss weights must be >= 0")
        if len(set(map(float, values))) != len(values):
            raise ConfigError(f"space.{key}.values = {list(values)!r}: repeated values")


def validate_space(space: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` naming the first bad entry of ``space``."""
    if not isinstance(space, Mapping):
        raise ConfigError(f"space = {space!r}: expected a mapping of loss keys to distributions")
    if not space:
        raise ConfigError("space: empty; declare at least one loss weight to tune "
                          "(or set tune.enabled: false)")
    for key, spec in space.items():
        _check_one(key, spec)


def to_tune_space(space: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Ray Tune ``param_space`` entries for a validated ``space``, keyed by the same dotted
    loss keys (Tune passes them back unchanged in each trial's config)."""
    from ray import tune

    out: dict[str, Any] = {}
    for key, spec in space.items():
        kind = spec["type"]
        if kind == "uniform":
            out[key] = tune.uniform(float(spec["low"]), float(spec["high"]))
        elif kind == "loguniform":
            out[key] = tune.loguniform(float(spec["low"]), float(spec["high"]))
        elif kind == "choice":
            out[key] = tune.choice([float(v) for v in spec["values"]])
        else:
            out[key] = tune.grid_search([float(v) for v in spec["values"]])
    return out


def grid_size(space: Mapping[str, Mapping[str, Any]]) -> int:
    """How many trials one sample of the space expands to (product of grid sizes)."""
    n = 1
    for spec in space.values():
        if spec["type"] == "grid":
            n *= len(spec["values"])
    return n
