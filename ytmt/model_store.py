"""A trained model's folder: what training writes and what evaluation and the registry read.

::

    <models>/<variant>/seed<k>/model.pt    the ytmt checkpoint (ytmt.checkpoint; weights only)
    <models>/<variant>/seed<k>/info.json   :class:`ModelInfo`

Each (variant, seed) run of ``train.runs()`` owns one such folder (one DVC stage output);
``run_label`` names its metrics and plot files. Nothing here imports torch or Ray.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ytmt.fileio import atomic_write_text

MODEL_FILE = "model.pt"
INFO_FILE = "info.json"


def run_dir(models: str | Path, variant: str, seed: int) -> Path:
    """The folder of run (``variant``, ``seed``) under the models root."""
    return Path(models) / variant / f"seed{int(seed)}"


def run_label(variant: str, seed: int) -> str:
    """``<variant>-seed<k>``: the name of a run's metrics and plot files."""
    return f"{variant}-seed{int(seed)}"


@dataclass(frozen=True)
class ModelInfo:
    """``info.json`` beside a ``model.pt``.

    ``metrics``: the last epoch's training and validation metrics (``val_psnr_t`` ...);
    ``history``: every epoch's. ``model_uri``: the logged MLflow model (``models:/<id>``),
    ``mlflow_run_id`` its run, in the tracking store ``tracking_uri`` (which the evaluate and
    register stages follow). ``source``: for a model not trained here (an imported
    release), where it came from (file, SHA-256, ...)."""

    variant: str
    seed: int
    model_path: str
    mlflow_run_id: str | None = None
    model_uri: str | None = None
    experiment_id: str | None = None
    epochs: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    vgg_weights: str | None = None
    ray_run: str | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    source: dict[str, Any] | None = None
    tracking_uri: str | None = None

    @property
    def val_metrics(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.metrics.items()
                if k.startswith("val_") and isinstance(v, (int, float))}


def write_info(folder: str | Path, info: ModelInfo) -> Path:
    """Write ``folder/info.json`` atomically. A ``model_path`` inside ``folder`` is written
    relative to it (``model.pt``): the folder reads the same wherever it is (another
    project path, another node, DVC's cache) and :func:`read_info` resolves it again."""
    data = asdict(info)
    model = Path(info.model_path)
    if model.is_absolute() and model.parent == Path(folder).resolve():
        data["model_path"] = model.name
    return atomic_write_text(Path(folder) / INFO_FILE, json.dumps(data, indent=2) + "\n")


def read_info(folder: str | Path) -> ModelInfo:
    """``folder/info.json`` as a :class:`ModelInfo`; a clear error when it is missing or not
    one (unknown keys are an error: the file is this project's own)."""
    path = Path(folder) / INFO_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; is {folder} a trained model folder "
                                f"(train stage output)?")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    known = {f.name for f in fields(ModelInfo)}
    if not isinstance(data, dict) or not {"variant", "seed", "model_path"} <= set(data):
        raise ValueError(f"{path}: expected a mapping with variant, seed and model_path")
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; known: {sorted(known)}")
    if not Path(data["model_path"]).is_absolute():  # written relative to the folder
        data["model_path"] = str((Path(folder) / data["model_path"]).resolve())
    return ModelInfo(**data)
