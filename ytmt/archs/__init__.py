"""Networks only (``nn.Module``s); losses and training live elsewhere."""

from ytmt.archs.build import build_model
from ytmt.archs.vgg import Hypercolumn, VGG19Features, VGGWeights, load_vgg19
from ytmt.archs.ytmt import VARIANTS, Exchange, SeparationModel, Variant, get_variant

__all__ = ["VARIANTS", "Exchange", "Hypercolumn", "SeparationModel", "VGG19Features",
           "VGGWeights", "Variant", "build_model", "get_variant", "load_vgg19"]
