"""YTMT: interactive dual-stream single image reflection separation (NeurIPS 2021).

The network API below is imported on first use, so that ``import ytmt.data.config`` (params
checks, the ``fetch_data`` stage) does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ytmt.archs import VARIANTS, SeparationModel, build_model, get_variant, load_vgg19

__all__ = ["VARIANTS", "SeparationModel", "build_model", "get_variant", "load_vgg19"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("ytmt.archs"), name)
    raise AttributeError(f"module 'ytmt' has no attribute {name!r}")
