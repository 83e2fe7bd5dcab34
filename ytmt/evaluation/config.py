"""params.yaml sections ``evaluate`` and ``register``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ytmt.config import ConfigError, bounded
from ytmt.metric_names import Protocol, validation_metrics
from ytmt.precision import Precision


@dataclass(frozen=True)
class EvaluateConfig:
    """Scoring of every trained model (``outputs/models``) on the synthetic test split and on
    every benchmark the data manifest lists as present (params ``data.benchmarks``).

    ``protocols``: ``paper`` (per-channel PSNR/SSIM on 0..255 floats) and/or ``strict``
    (joint RGB on 8-bit images), see :mod:`ytmt.metrics`. ``synthetic``: also score the
    synthetic test split. ``max_images``: at most this many images per set (null: all).
    ``tile``: 0 runs each image in one pass like the paper; N > 0 tiles images larger than
    N×N (``overlap`` shared pixels) to bound memory with full-width models.
    ``precision``: ``fp32``, ``bf16`` (autocast; weights stay fp32) or ``auto`` (bf16 where
    ``device`` computes it natively, :mod:`ytmt.precision`); the summary records the
    resolved value. ``visual_cases``: best and worst images per set drawn as input/T̂/R̂/T
    grids.
    ``experiment``: MLflow experiment for models without a training run to log into.
    ``tracking_uri`` null: the store the models were trained into (their ``info.json``), else
    the training section's, ``$MLFLOW_TRACKING_URI`` or ``sqlite:///<cwd>/mlflow.db``.
    ``imported``: name → folder of a model made by ``ytmt import-authors`` (its ``model.pt``
    and ``info.json``), scored beside the trained ones under that name.
    ``workers``: 0 scores everything in this process; N > 0 splits models × images over N
    Ray workers (:mod:`ytmt.evaluation.fanout`) of ``cpus_per_worker`` CPUs each (their
    torch threads: ``torch_threads``, else the whole CPUs they hold), on ``ray_address``
    (null: ``$RAY_ADDRESS`` or a local Ray). ``use_gpu`` null: each worker takes
    ``gpus_per_worker`` GPU when the cluster has GPUs; true requires them; false never.
    The outputs are the same files and MLflow entries as with ``workers: 0``.
    """

    protocols: tuple[Protocol, ...] = ("paper", "strict")
    synthetic: bool = True
    max_images: int | None = bounded(None, ge=1)
    tile: int = bounded(0, ge=0)
    overlap: int = bounded(32, ge=0)
    device: str = "cpu"
    precision: Precision = "fp32"
    torch_threads: int | None = bounded(None, ge=1)
    visual_cases: int = bounded(3, ge=0)
    experiment: str = "ytmt-evaluate"
    tracking_uri: str | None = None
    imported: dict[str, str] = field(default_factory=dict)
    workers: int = bounded(0, ge=0)
    cpus_per_worker: float = bounded(1.0, gt=0)
    use_gpu: bool | None = None
    gpus_per_worker: float = bounded(1.0, gt=0)
    ray_address: str | None = None

    def validate(self) -> None:
        self._validate_imported()
        if self.workers and self.device != "cpu":
            raise ConfigError(f"device = {self.device!r}: with workers > 0 the workers run on "
                              "a GPU by use_gpu; leave device: cpu")
        if not self.protocols:
            raise ConfigError("protocols: list at least one of 'paper', 'strict'")
        if len(set(self.protocols)) != len(self.protocols):
            raise ConfigError(f"protocols = {list(self.protocols)!r}: duplicates")
        if self.tile and (self.tile % 16 or self.tile < 32):
            raise ConfigError(f"tile = {self.tile}: expected 0 or a multiple of 16 >= 32")
        if self.tile and self.overlap > self.tile // 2:
            raise ConfigError(f"overlap = {self.overlap}: must be <= tile/2 = {self.tile // 2}")

    def _validate_imported(self) -> None:
        import re

        from ytmt.variants import VARIANTS

        for name, folder in self.imported.items():
            if not re.fullmatch(r"[\w\-.]+", name):
                raise ConfigError(f"imported.{name}: name must be letters, digits, '_', '-', '.'")
            if name in VARIANTS:
                raise ConfigError(f"imported.{name}: a variant's name; call an imported model "
                                  "something else (e.g. authors-uct)")
            if not folder:
                raise ConfigError(f"imported.{name}: expected the folder of ytmt import-authors")


@dataclass(frozen=True)
class RegisterConfig:
    """MLflow Model Registry: every evaluated model becomes a version of ``model_name``;
    alias ``alias`` (champion) moves to the version with the best validation ``metric``
    (``mode`` max or min; a validation metric of training, never a test-set score), and each
    variant's best version gets an alias named after the variant (``models:/ytmt@ytmt-ucs``).
    ``real_metric``: when every model has it (trained on shards with held-out real pairs,
    ``data.real_val``), the choice is made on it instead of ``metric``; null: never.
    """

    model_name: str = "ytmt"
    alias: str = "champion"
    metric: str = "val_psnr_t"
    real_metric: str | None = "val_real_psnr_t"
    mode: Literal["max", "min"] = "max"
    tracking_uri: str | None = None

    def validate(self) -> None:
        import re

        if not re.fullmatch(r"[\w\-. ]+", self.model_name):
            raise ConfigError(f"model_name = {self.model_name!r}: use letters, digits, "
                              "'_', '-', '.'")
        if not re.fullmatch(r"[\w\-]+", self.alias) or self.alias.lower() == "latest" or \
                re.fullmatch(r"v\d+", self.alias):
            raise ConfigError(f"alias = {self.alias!r}: letters, digits, '_' and '-'; not "
                              "'latest' or 'v<number>' (reserved by MLflow)")
        for key in ("metric", "real_metric"):
            value = getattr(self, key)
            if value is not None and not value.startswith("val_"):
                raise ConfigError(f"{key} = {value!r}: the champion is chosen by a "
                                  "validation metric (val_*), never by a test set")
            if value is not None and value not in validation_metrics():
                raise ConfigError(f"{key} = {value!r}: training logs no such metric; "
                                  f"choose from {', '.join(validation_metrics())}")
