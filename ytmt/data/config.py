"""params.yaml sections ``fetch``, ``synthesize`` and ``data``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ytmt.config import bounded


@dataclass(frozen=True)
class FetchConfig:
    source: Literal["samples", "voc2012", "folder"] = "samples"
    limit: int | None = None
    folder: str | None = None
    voc_url: str = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar"
    voc_tar: str | None = None
    voc_md5: str = "6cd6e144f989b92b3379bac3b3de84fd"
    voc_size: int = bounded(1999639040, ge=1)


@dataclass(frozen=True)
class SynthesizeConfig:
    size: int = bounded(96, ge=16)


@dataclass(frozen=True)
class DataConfig:
    root: str = "data"
    real_pairs: str = "real_train"
    benchmarks: dict[str, str] = field(default_factory=dict)
