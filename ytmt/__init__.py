"""YTMT: interactive dual-stream single image reflection separation (NeurIPS 2021).

The top-level names are loaded on first use (PEP 562), so that ``import ytmt.params`` (every
DVC stage) does not import torch and the networks: a stage depends only on the modules it
uses (see ``tests/test_dvc_deps.py``).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module that defines it
_LAZY = {"VARIANTS": "ytmt.variants", "get_variant": "ytmt.variants",
         "SeparationModel": "ytmt.archs.ytmt", "build_model": "ytmt.archs.build",
         "load_vgg19": "ytmt.archs.vgg"}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'ytmt' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
