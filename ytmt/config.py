"""Typed, validated configuration parsed once from ``params.yaml``.

Every section of ``params.yaml`` maps to a frozen dataclass. ``parse_section`` turns a
plain mapping into such a dataclass and rejects, before any heavy work starts:

- unknown keys (with the list of allowed keys),
- values of the wrong type (``"0.1"`` where a float is expected, a list for an int, ...),
- values outside their allowed set (``Literal``) or range (``field(metadata=...)``).

Every error names the full key (``train.epochs``), the offending value and what is
allowed, so a malformed ``dvc exp run -S`` fails in milliseconds, not after an epoch.

Section dataclasses live next to the code that uses them (``ytmt.data.config``,
``ytmt.train.config``, ...); this module owns the parser, the model and loss sections and
the top-level :class:`Params`.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A value in params.yaml (or a CLI override) is malformed."""


def bounded(default: Any, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, lt: float | None = None) -> Any:
    """A dataclass field whose numeric value (or every element of a tuple) is range-checked."""
    meta = {k: v for k, v in {"ge": ge, "gt": gt, "le": le, "lt": lt}.items() if v is not None}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (tuple, list):
        args = typing.get_args(tp)
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin is dict:
        k, v = typing.get_args(tp)
        return f"a mapping of {_type_name(k)} to {_type_name(v)}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return f"a mapping with keys {', '.join(f.name for f in dataclasses.fields(tp))}"
    return getattr(tp, "__name__", str(tp))


def _fail(key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{key} = {value!r}: expected {allowed}")


def _union_error(key: str, value: Any, tp: Any,
                 failures: list[tuple[Any, ConfigError]]) -> ConfigError:
    """One line for a value no branch of the union ``tp`` accepted: the branches' types,
    then the reason of each branch that failed deeper than its type (a nested key, a list
    element), e.g. ``x = [1, 'a']: expected a list of int or null (as a list of int:
    x[1] = 'a': expected an integer)``."""
    same = f"{key} = {value!r}: "  # a branch that only restates the type mismatch
    reasons = [f"as {_type_name(arg)}: {err}" for arg, err in failures
               if not str(err).startswith(same)]
    detail = f" ({'; '.join(reasons)})" if reasons else ""
    return ConfigError(f"{same}expected {_type_name(tp)}{detail}")


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise _fail(key, value, _type_name(tp))
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        failures = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, key)
            except ConfigError as err:
                failures.append((arg, err))
        raise _union_error(key, value, tp, failures)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _fail(key, value, _type_name(tp))
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        items = [_convert(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _fail(key, value, _type_name(tp))
        k_tp, v_tp = typing.get_args(tp)
        return {_convert(k_tp, k, key): _convert(v_tp, v, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise _fail(key, value, _type_name(tp))
        return parse_section(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _fail(key, value, "true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _fail(key, value, "an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _fail(key, value, "a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise _fail(key, value, "a string")
    raise TypeError(f"config type {tp!r} of {key} is not supported by the parser")


def _check_range(key: str, value: Any, meta: Mapping[str, float]) -> None:
    if not meta or value is None:
        return
    values = value if isinstance(value, (tuple, list)) else [value]
    for v in values:
        for op, bound in meta.items():
            ok = {"ge": v >= bound, "gt": v > bound, "le": v <= bound, "lt": v < bound}[op]
            if not ok:
                sym = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}[op]
                raise ConfigError(f"{key} = {value!r}: must be {sym} {bound}")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """The resolved field types of the dataclass ``cls`` (resolving them compiles every
    annotation string: cached, since params are parsed again for each override)."""
    return typing.get_type_hints(cls)


def parse_section(cls: type[T], data: Mapping[str, Any] | None, prefix: str) -> T:
    """Build the dataclass ``cls`` from ``data``, validating every key under ``prefix``."""
    data = dict(data or {})
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{prefix}.{unknown[0]}: unknown key; allowed keys of {prefix}: "
            + ", ".join(sorted(fields))
        )
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}"
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{key}: missing; expected {_type_name(hints[name])}")
            continue
        kwargs[name] = _convert(hints[name], data[name], key)
        _check_range(key, kwargs[name], f.metadata)
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError as err:
            raise ConfigError(f"{prefix}: {err}") from None
    return obj


def missing_keys(cls: type, data: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys of the dataclass ``cls`` (nested sections included) that ``data``
    does not set, in declaration order; a section given as something else than a mapping
    is left to :func:`parse_section`'s type error."""
    missing = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if f.name not in data:
            missing.append(key)
            continue
        tp = _hints(cls)[f.name]
        if dataclasses.is_dataclass(tp) and isinstance(data[f.name], Mapping):
            missing += missing_keys(tp, data[f.name], key + ".")
    return missing


def to_dict(obj: Any) -> Any:
    """A plain (YAML/JSON-able) copy of a config dataclass, tuples as lists."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}``: the shape MLflow params want."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


# --------------------------------------------------------------------------- model, losses

VGGMode = Literal["imagenet", "auto", "random"]


@dataclass(frozen=True)
class ModelConfig:
    """Network construction shared by training, evaluation and inference.

    ``width`` is the first block's channel count (the paper: 64); tests use 4-8.
    ``vgg_weights``: ``imagenet`` refuses to run without torchvision's VGG-19 file,
    ``auto`` falls back to seeded random weights with a loud warning, ``random`` always
    uses them. ``vgg_path``: an explicit ``vgg19-dcbb9e9d.pth``; otherwise the torch hub
    cache is searched.
    """

    width: int = bounded(64, ge=1)
    hypercolumn: bool = True
    vgg_weights: VGGMode = "auto"
    vgg_path: str | None = None
    vgg_seed: int = 0
    plain_layers: int = bounded(10, ge=3)


@dataclass(frozen=True)
class LossConfig:
    """``L = L_rec + λ1·L_per + λ2·L_exc + λ3·L_adv`` and ``L_rec``'s a, b, c, d (design.md s2)."""

    rec_t_mse: float = bounded(0.3, ge=0.0)  # a
    rec_r_mse: float = bounded(0.9, ge=0.0)  # b
    rec_t_grad: float = bounded(0.6, ge=0.0)  # c
    rec_sum_l1: float = bounded(0.2, ge=0.0)  # d
    perceptual: float = bounded(0.1, ge=0.0)  # λ1
    exclusion: float = bounded(1.0, ge=0.0)  # λ2
    adversarial: float = bounded(0.01, ge=0.0)  # λ3
    perceptual_layer_weights: tuple[float, ...] = bounded(
        (1 / 2.6, 1 / 4.8, 1 / 3.7, 1 / 5.6, 10 / 1.5), ge=0.0)
    perceptual_on_reflection: bool = True
    exclusion_levels: int = bounded(3, ge=1)
    # sample: exclusion α/ψ and RaGAN means per image (the authors' batch of 1; DDP-exact);
    # batch: pooled over the per-worker batch like the authors' code (ytmt.losses)
    batch_statistics: Literal["sample", "batch"] = "sample"

    def validate(self) -> None:
        if len(self.perceptual_layer_weights) != 5:
            raise ConfigError(
                f"perceptual_layer_weights = {list(self.perceptual_layer_weights)!r}: "
                "expected 5 weights (relu1_2, relu2_2, relu3_2, relu4_2, relu5_2)")


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return dict(data)
