"""YTMT: interactive dual-stream single image reflection separation (NeurIPS 2021)."""

from ytmt.archs import VARIANTS, SeparationModel, build_model, get_variant, load_vgg19

__all__ = ["VARIANTS", "SeparationModel", "build_model", "get_variant", "load_vgg19"]
__version__ = "0.1.0"
