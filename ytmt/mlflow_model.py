"""The logged MLflow model of a ytmt checkpoint: how training and the registry log it.

A ytmt model in MLflow is a pyfunc logged from code: its one artifact is the plain ytmt
checkpoint (weights only) and its code file says ``set_model(SeparatorModel())`` with
:class:`ytmt.serving.SeparatorModel`, imported from the ``ytmt`` package logged with the model
(``code_paths``: the model's ``code/`` folder, first on ``sys.path`` when MLflow loads it).
Why a pyfunc and not ``mlflow.pytorch``: MLflow 3's default pytorch format
(torch.export, "pt2") specialises the U-Net to the example's height and width (design.md s5).

This module is what *logging* needs (the contract: artifact name, columns, signature,
requirements). It imports torch and the networks, through :func:`ytmt.checkpoint.load_checkpoint`,
which checks a checkpoint before it is logged, and the default tile settings of
:mod:`ytmt.tiling` (numpy only); it does not import the request path (:mod:`ytmt.serving`,
:mod:`ytmt.inference`, :mod:`ytmt.imageio`), so a change there does not make the training
stage stale. Importing it does not import mlflow either (the functions do, when called).
"""

from __future__ import annotations

import base64
import io
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ytmt.checkpoint import load_checkpoint
from ytmt.precision import DEFAULT_PRECISION
from ytmt.tiling import DEFAULT_OVERLAP, DEFAULT_TILE

CHECKPOINT_ARTIFACT = "checkpoint"
INPUT_COLUMN = "image"
OUTPUT_COLUMNS = ("transmission", "reflection")
# "Models from code": the logged model holds this file, not a cloudpickle of SeparatorModel,
# so loading the model unpickles nothing (the checkpoint itself loads weights-only).
MODEL_CODE_FILE = "ytmt_separator.py"
MODEL_CODE = """\"\"\"MLflow pyfunc entry point of a ytmt model (ytmt: the model's code/).\"\"\"
from mlflow.models import set_model

from ytmt.serving import SeparatorModel

set_model(SeparatorModel())
"""
MODEL_URI_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/", "file:", "s3:", "gs:", "http")


def example_input(size: int = 32, seed: int = 0) -> pd.DataFrame:
    """A one-row DataFrame with a random ``size``² RGB PNG, base64 encoded."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return pd.DataFrame({INPUT_COLUMN: [base64.b64encode(buf.getvalue()).decode("ascii")]})


def signature():
    """Input: string column ``image``; output: string columns ``transmission``,
    ``reflection``; optional params ``tile`` (0: untiled), ``overlap`` and ``precision``
    (auto, fp32, bf16: :mod:`ytmt.precision`)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", INPUT_COLUMN)]),
        outputs=Schema([ColSpec("string", c) for c in OUTPUT_COLUMNS]),
        params=ParamSchema([ParamSpec("tile", "long", DEFAULT_TILE),
                            ParamSpec("overlap", "long", DEFAULT_OVERLAP),
                            ParamSpec("precision", "string", DEFAULT_PRECISION)]))


def pip_requirements() -> list[str]:
    """Pinned third-party requirements of the pyfunc: what ``ytmt.serving`` imports (the ytmt
    package itself is logged with the model as code)."""
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in
            ("mlflow", "torch", "numpy", "pandas", "pillow", "tifffile", "pyyaml", "tqdm")]


def log_model(checkpoint_path: str | Path, name: str = "model",
              registered_model_name: str | None = None):
    """Log the checkpoint as a pyfunc model into the *active* MLflow run; returns its
    ``ModelInfo`` (``.model_uri`` is ``models:/<model id>``). The checkpoint is validated
    (weights-only load) before anything is logged."""
    import mlflow

    if mlflow.active_run() is None:
        raise RuntimeError("ytmt.mlflow_model.log_model needs an active MLflow run "
                           "(call it inside `with mlflow.start_run(...)`)")
    load_checkpoint(checkpoint_path)  # refuse unsafe or foreign files before logging
    with tempfile.TemporaryDirectory(prefix="ytmt-pyfunc-") as tmp:
        code = Path(tmp) / MODEL_CODE_FILE
        code.write_text(MODEL_CODE)
        return mlflow.pyfunc.log_model(
            name=name, python_model=str(code),
            artifacts={CHECKPOINT_ARTIFACT: str(checkpoint_path)},
            pip_requirements=pip_requirements(), signature=signature(),
            # the ytmt package travels with the model (MLflow puts code/ on sys.path when it
            # loads it): a machine with only the tracking URI and the package index serves
            # it, and it is the code that trained it, not whatever ytmt is installed there
            code_paths=[str(Path(__file__).resolve().parent)],
            input_example=example_input(), registered_model_name=registered_model_name)


