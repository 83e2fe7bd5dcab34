"""The model as an MLflow pyfunc: load it back and serve it (logging: :mod:`ytmt.mlflow_model`).

Request images are decoded by :mod:`ytmt.imageio`, the decoder the training data and
``ytmt separate`` use, so a served model sees the pixels it was trained on. The pyfunc keeps
the plain ytmt checkpoint (weights only, loaded with ``weights_only=True``)
as its single artifact and runs :func:`ytmt.inference.separate`, so any size and aspect
works, large images tiled.

Request and response (``mlflow models serve``, ``/invocations``)::

    {"dataframe_split": {"columns": ["image"], "data": [["<base64 PNG/JPEG/TIFF bytes>"]]},
     "params": {"tile": 256, "overlap": 32, "precision": "auto"}}   # params optional
    -> {"predictions": [{"transmission": "<base64 PNG>", "reflection": "<base64 PNG>"}]}

The serving environment must have the ``ytmt`` package installed (``--env-manager local`` in
this project's virtual environment); ``pip_requirements`` lists the third-party packages.
"""

from __future__ import annotations

import base64
import binascii
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

from ytmt.archs.ytmt import SeparationModel
from ytmt.checkpoint import model_from_checkpoint
from ytmt.imageio import ImageReadError, decode_image, encode_png
from ytmt.inference import check_tiling, separate
from ytmt.mlflow_model import (  # noqa: F401 - log_model re-exported for callers
    CHECKPOINT_ARTIFACT,
    INPUT_COLUMN,
    MODEL_URI_SCHEMES,
    OUTPUT_COLUMNS,
    log_model,
)
from ytmt.precision import DEFAULT_PRECISION, PRECISIONS
from ytmt.tiling import DEFAULT_OVERLAP, DEFAULT_TILE


class BadRequest(MlflowException):
    """A request the model cannot answer, with one line saying why: served as HTTP 400
    ``{"error_code": "INVALID_PARAMETER_VALUE", "message": <reason>}`` and no stack trace.

    MLflow 3.17's scoring server answers any other exception of ``predict`` with a generic
    message and the full traceback (server paths included), and prefixes the message of an
    ``MlflowException`` with a dump of the request's data (``e.message = f"Failed to predict
    data '{data}'. ..."``); this exception keeps its reason as its message whatever is
    assigned to it."""

    def __init__(self, reason: str) -> None:
        self._reason = reason
        super().__init__(reason, error_code=INVALID_PARAMETER_VALUE)

    @property
    def message(self) -> str:
        return self._reason

    @message.setter
    def message(self, value: str) -> None:
        """Ignored: the reason is the whole message (see the class docstring)."""


def _b64_image(b64: Any, row: int) -> np.ndarray:
    """Row ``row``'s base64 image → (H, W, 3) float32 in [0, 1]; :class:`BadRequest` for a
    value that is not text, not base64, not an image or too large (Pillow's decompression
    bomb limit)."""
    if isinstance(b64, bytes):
        b64 = b64.decode("ascii", errors="replace")
    if not isinstance(b64, str):
        raise BadRequest(f"row {row}: column {INPUT_COLUMN!r} must hold base64 text, "
                         f"got {type(b64).__name__}")
    try:
        data = base64.b64decode("".join(b64.split()), validate=True)  # line breaks allowed
    except (binascii.Error, ValueError) as err:
        raise BadRequest(f"row {row}: column {INPUT_COLUMN!r} is not valid base64 ({err})") \
            from None
    try:
        return decode_image(data, f"row {row}")
    except ImageReadError as err:
        raise BadRequest(str(err)) from None


def _request_params(params: dict[str, Any] | None) -> tuple[int | None, int, str]:
    """``(tile or None, overlap, precision)`` of the request's params, checked
    (:class:`BadRequest`)."""
    params = params or {}
    tile = int(params.get("tile", DEFAULT_TILE))
    overlap = int(params.get("overlap", DEFAULT_OVERLAP))
    precision = str(params.get("precision", DEFAULT_PRECISION))
    if precision not in PRECISIONS:
        raise BadRequest(f"params.precision = {precision!r}: expected one of "
                         f"{', '.join(PRECISIONS)}")
    if tile:
        try:
            check_tiling(tile, overlap)
        except ValueError as err:
            raise BadRequest(f"params.{err}") from None
    return tile or None, overlap, precision


class SeparatorModel(PythonModel):
    """pyfunc: DataFrame column ``image`` (base64 encoded image files) → DataFrame columns
    ``transmission`` and ``reflection`` (base64 8-bit PNGs of the input's size). Every row
    is decoded before any is separated: a bad one fails the request at once
    (:class:`BadRequest`)."""

    def load_context(self, context) -> None:
        self.model = model_from_checkpoint(context.artifacts[CHECKPOINT_ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        if not isinstance(model_input, pd.DataFrame) or INPUT_COLUMN not in model_input:
            cols = list(getattr(model_input, "columns", []))
            raise BadRequest(f"expected a DataFrame with a column {INPUT_COLUMN!r} of base64 "
                             f"images; got columns {cols}")
        tile, overlap, precision = _request_params(params)
        images = [_b64_image(b64, i) for i, b64 in enumerate(model_input[INPUT_COLUMN].tolist())]
        rows = []
        for image in images:
            t_hat, r_hat = separate(self.model, image, tile=tile, overlap=overlap,
                                    precision=precision)
            rows.append({"transmission": base64.b64encode(encode_png(t_hat)).decode("ascii"),
                         "reflection": base64.b64encode(encode_png(r_hat)).decode("ascii")})
        return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))


def is_model_uri(ref: str) -> bool:
    return str(ref).startswith(MODEL_URI_SCHEMES)


def checkpoint_from_model_uri(uri: str, dst: str | Path | None = None,
                              tracking_uri: str | None = None) -> Path:
    """Download the checkpoint artifact of the pyfunc model at ``uri`` (``models:/name@alias``,
    ``models:/name/3``, ``runs:/<id>/model``, ...) into ``dst`` (default: a temp folder)."""
    from mlflow.artifacts import download_artifacts
    from mlflow.models import Model

    from ytmt.tracking import resolve_tracking_uri

    store = resolve_tracking_uri(tracking_uri)
    registry = os.environ.get("MLFLOW_REGISTRY_URI") or store
    dst = Path(dst) if dst is not None else Path(tempfile.mkdtemp(prefix="ytmt-model-"))
    local = Path(download_artifacts(artifact_uri=uri, dst_path=str(dst), tracking_uri=store,
                                    registry_uri=registry))
    flavor = Model.load(str(local)).flavors.get("python_function", {})
    artifacts = flavor.get("artifacts", {})
    if CHECKPOINT_ARTIFACT not in artifacts:
        raise ValueError(f"{uri}: not a ytmt model (no {CHECKPOINT_ARTIFACT!r} artifact in "
                         "its MLmodel file)")
    return local / artifacts[CHECKPOINT_ARTIFACT]["path"]


def load_separator(ref: str | Path, tracking_uri: str | None = None) -> SeparationModel:
    """The SeparationModel (eval mode, CPU) from a checkpoint file or an MLflow model URI
    (``models:/<name>@champion``, ``models:/<name>/<version>``, ``runs:/<run id>/model``).
    The tracking URI follows ytmt.tracking (explicit > $MLFLOW_TRACKING_URI >
    ``sqlite:///<cwd>/mlflow.db``); the registry is the same store unless
    $MLFLOW_REGISTRY_URI says otherwise."""
    ref = str(ref)
    if Path(ref).is_file():
        return model_from_checkpoint(ref)
    if not is_model_uri(ref):
        raise FileNotFoundError(f"{ref}: neither a checkpoint file nor an MLflow model URI "
                                "(models:/<name>@<alias>, models:/<name>/<version>, "
                                "runs:/<run id>/model)")
    tmp = Path(tempfile.mkdtemp(prefix="ytmt-model-"))
    try:
        return model_from_checkpoint(checkpoint_from_model_uri(ref, tmp, tracking_uri))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
