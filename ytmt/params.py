"""``params.yaml`` → :class:`Params`, validated once at every entry point."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ytmt.config import ConfigError, LossConfig, ModelConfig, load_yaml, parse_section
from ytmt.data.config import DataConfig, FetchConfig, SynthesizeConfig
from ytmt.evaluation.config import EvaluateConfig, RegisterConfig
from ytmt.sweep.config import TuneConfig
from ytmt.train.config import TrainConfig


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


def parse_params(data: Mapping[str, Any], source: str = "params") -> Params:
    """Validate a params mapping (as loaded from YAML); raises ConfigError naming the key."""
    try:
        return parse_section(Params, data, source)
    except ConfigError as err:
        raise ConfigError(str(err).replace(f"{source}.", "", 1)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Load and validate ``params.yaml``."""
    return parse_params(load_yaml(path), str(path))


def replace(params: Params, **sections: Any) -> Params:
    return dataclasses.replace(params, **sections)


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
