"""``params.yaml`` → :class:`Params`, validated once at every entry point.

Validation has three layers, all run by :func:`parse_params` before any stage does work (no
Ray, no MLflow, no torch): each value's type and range (:func:`ytmt.config.parse_section`),
each section's own rules (its ``validate``), and the rules *between* sections
(:func:`check_constraints`: a training crop that the stored mixtures cannot give, a sweep
over a variant that is not trained, ...). Each failure is one :class:`ConfigError` line
naming the keys.

One source of values: :func:`load_params` requires the file to set every key
(:func:`ytmt.config.missing_keys`). ``params.yaml`` is a run's complete, versioned record
(DVC tracks it, ``dvc exp run -S`` edits it); a key deleted from it must not silently take
the dataclass default, which is another recipe (the dataclasses' defaults serve code and
tests that build a config directly).
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ytmt.config import (
    ConfigError,
    LossConfig,
    ModelConfig,
    load_yaml,
    missing_keys,
    parse_section,
    to_dict,
)
from ytmt.data.config import DataConfig, FetchConfig, SynthesizeConfig
from ytmt.evaluation.config import EvaluateConfig, RegisterConfig
from ytmt.sweep.config import TuneConfig
from ytmt.train.config import TrainConfig

#: The discriminator's GroupNorm (``ytmt.archs.discriminator``): min(32, c) groups of c channels.
NORM_GROUPS = 32


@dataclass(frozen=True)
class Params:
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    fetch: FetchConfig = field(default_factory=FetchConfig)
    synthesize: SynthesizeConfig = field(default_factory=SynthesizeConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)


def parse_params(data: Mapping[str, Any], source: str = "params", *,
                 complete: bool = False) -> Params:
    """Validate a params mapping (as loaded from YAML): types, ranges, each section's rules
    and :func:`check_constraints`; raises ConfigError naming the key. ``complete``: every
    key must be set (a params file); otherwise absent keys take the dataclass defaults."""
    try:
        params = parse_section(Params, data, source)
    except ConfigError as err:
        raise ConfigError(str(err).replace(f"{source}.", "", 1)) from None
    missing = missing_keys(Params, data) if complete else []
    if missing:
        raise ConfigError(
            f"{source}: missing key{'s' if len(missing) > 1 else ''} {', '.join(missing)}: "
            "every key must be set (a deleted key would silently take another value); copy "
            "it from the repository's params.yaml")
    check_constraints(params)
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    """Load and validate ``params.yaml``, which must set every key (module docstring)."""
    return parse_params(load_yaml(path), str(path), complete=True)


def resolve_params(params: Mapping[str, Any],
                   overrides: Mapping[str, Any] | None = None) -> Params:
    """``params`` (plain dict) with ``overrides`` applied, validated → ``Params``.

    Override keys are dotted paths (``loss.perceptual``, ``train.epochs``) or a top-level
    scalar (``seed``); a whole section cannot be replaced by a scalar."""
    data = copy.deepcopy(dict(params))
    for key, value in (overrides or {}).items():
        parts = str(key).split(".")
        if not all(parts):
            raise ConfigError(f"override {key!r}: expected a dotted key like 'loss.perceptual'")
        if len(parts) == 1 and isinstance(data.get(key), dict):
            raise ConfigError(f"override {key!r}: is a section; name a key inside it, like "
                              f"'{key}.<key>'")
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key!r}: {part!r} is not a section")
        node[parts[-1]] = value
    return parse_params(data, "params")


def replace(params: Params, **sections: Any) -> Params:
    return dataclasses.replace(params, **sections)


# --------------------------------------------------------------------------- between sections


def check_constraints(params: Params) -> None:
    """The rules between sections, each a :class:`ConfigError` naming the keys, raised here
    instead of inside a Ray worker (or a later stage) after minutes of work."""
    _check_crop(params)
    _check_discriminator(params)
    _check_gpu_sharing(params)
    _check_named_photos(params)
    if params.tune.enabled:
        _check_tune(params)


def _check_crop(params: Params) -> None:
    """The training crop comes out of the stored mixtures, and the exclusion loss halves it
    ``exclusion_levels - 1`` times down to at least 2 px (a forward difference)."""
    crop, size, levels = params.train.crop, params.synthesize.size, params.loss.exclusion_levels
    if crop > size:
        raise ConfigError(f"train.crop = {crop} > synthesize.size = {size}: the training crop "
                          "must fit in the stored mixtures; lower train.crop or raise "
                          "synthesize.size (and scale_min, which is >= size)")
    if crop >> (levels - 1) < 2:
        raise ConfigError(f"loss.exclusion_levels = {levels} with train.crop = {crop}: its "
                          f"coarsest scale would be {crop >> (levels - 1)} px; use at most "
                          f"{crop.bit_length() - 1} levels or a crop of at least {2 ** levels}")


def discriminator_width_ok(width: int) -> bool:
    """Whether every GroupNorm of a ``width`` discriminator (widths w, 2w, 4w, 8w) divides
    its channels into ``min(32, c)`` groups."""
    return all(c < NORM_GROUPS or c % NORM_GROUPS == 0 for c in (width, 2 * width, 4 * width,
                                                                  8 * width))


def _check_discriminator(params: Params) -> None:
    width = params.train.discriminator_width
    if params.train.gan and not discriminator_width_ok(width):
        valid = [w for w in range(1, 4 * NORM_GROUPS + 1) if discriminator_width_ok(w)]
        raise ConfigError(f"train.discriminator_width = {width} with train.gan: its GroupNorm "
                          f"needs each width (w, 2w, 4w, 8w) below {NORM_GROUPS} or a "
                          f"multiple of it; e.g. {', '.join(map(str, valid))}")


def _shared_gpu_error(workers_key: str, workers: int, gpus_key: str,
                      gpus: float) -> ConfigError | None:
    """Fractional GPUs let two NCCL ranks of one DDP group land on one GPU (NCCL refuses or
    hangs): with several workers, each must hold whole GPUs."""
    if workers > 1 and gpus > 0 and not float(gpus).is_integer():
        return ConfigError(f"{gpus_key} = {gpus} with {workers_key} = {workers}: two DDP ranks "
                           "would share a GPU (NCCL cannot); give each worker whole GPUs")
    return None


def _check_gpu_sharing(params: Params) -> None:
    train, tune = params.train, params.tune
    if train.use_gpu:
        err = _shared_gpu_error("train.num_workers", train.num_workers,
                                "train.gpus_per_worker", train.gpus_per_worker)
        if err:
            raise err
    # a trial's workers and GPUs (it uses GPUs when it holds some): tune's, each null one
    # following train (ytmt.sweep.plan.trial_resources)
    workers = tune.workers_per_trial or max(train.num_workers, 1)
    gpus = tune.gpus_per_worker
    if gpus is None:
        gpus = train.gpus_per_worker if train.use_gpu else 0.0
    if tune.enabled:
        err = _shared_gpu_error("tune.workers_per_trial", workers, "tune.gpus_per_worker", gpus)
        if err:
            raise err


def _check_named_photos(params: Params) -> None:
    """Photos held out by name must be among the bundled samples that are fetched."""
    fetch, synth = params.fetch, params.synthesize
    if fetch.source != "samples":
        return
    for split in ("val", "test"):
        absent = [p for p in getattr(synth, f"{split}_photos") if p not in fetch.samples]
        if absent:
            raise ConfigError(f"synthesize.{split}_photos: {absent!r} not in fetch.samples "
                              f"({', '.join(fetch.samples)})")


def _check_tune(params: Params) -> None:
    """The sweep tunes a trained variant, searches weights that act, and every trial's
    params (overrides and each end of the space applied) pass all the rules above."""
    tune, train = params.tune, params.train
    if tune.variant not in train.variants:
        raise ConfigError(f"tune.variant = {tune.variant!r} is not in train.variants "
                          f"({', '.join(train.variants)}): the sweep would tune weights for a "
                          "model the pipeline does not train")
    gan = tune.overrides.get("train.gan", train.gan)
    if "loss.adversarial" in tune.space and not gan:
        raise ConfigError("tune.space.loss.adversarial with train.gan: false: the weight has "
                          "no effect without the GAN; drop it or set train.gan: true")
    base = to_dict(params)
    base["tune"]["enabled"] = False  # the trial's own params: no sweep inside
    candidates = [("tune.overrides", {})]
    for key, spec in tune.space.items():
        ends = spec["values"] if "values" in spec else (spec["low"], spec["high"])
        candidates += [(f"tune.space.{key} = {v!r}", {key: v}) for v in ends]
    for where, sample in candidates:
        try:
            resolve_params(base, {**tune.overrides, **sample})
        except ConfigError as err:
            raise ConfigError(f"{where}: a trial's params are invalid: {err}") from None


def run_stage(main: Callable[[], int | None]) -> int:
    """Run a stage's ``main``: its logging set up (:mod:`ytmt.logs`: quiet console, full log
    in ``outputs/logs/<stage>.log``), and a ConfigError turned into one clear line and exit
    code 2."""
    from ytmt.logs import configure_stage_logging, stage_log_name

    configure_stage_logging(stage_log_name(sys.argv))
    try:
        return main() or 0
    except ConfigError as err:
        print(f"error: invalid params: {err}", file=sys.stderr)
        return 2
