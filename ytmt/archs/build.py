"""``build_model``: every variant by name."""

from __future__ import annotations

from torch import nn

from ytmt.archs.released import ReleasedUNet
from ytmt.archs.vgg import Hypercolumn, VGG19Features, load_vgg19
from ytmt.archs.ytmt import HYPERCOLUMN_CHANNELS, SeparationModel, Variant, build_stage, get_variant

RELEASED_BACKBONE = "released-unet"


def _stage(spec: Variant, in_channels: int, width: int, plain_layers: int,
           fuse_streams: bool) -> nn.Module:
    """One stage of ``spec``: the authors' released U-Net or one of ``build_stage``'s."""
    if spec.backbone == RELEASED_BACKBONE:
        return ReleasedUNet(in_channels, width, fuse_streams)
    return build_stage(spec, in_channels, width, plain_layers, fuse_streams)


def build_model(variant: str, width: int = 64, hypercolumn: bool = True,
                vgg: VGG19Features | None = None, vgg_weights: str = "auto",
                vgg_path: str | None = None, vgg_seed: int = 0, plain_layers: int = 10,
                fuse_streams: bool = False, lazy_hypercolumn: bool = True) -> SeparationModel:
    """Build ``variant`` (see ``ytmt.archs.ytmt.VARIANTS``) at channel ``width``.

    ``vgg``: a VGG19Features to share with the perceptual loss; otherwise one is loaded per
    ``vgg_weights``/``vgg_path``/``vgg_seed``. ``hypercolumn=False`` feeds plain RGB (3
    channels) instead of the 1475-channel hypercolumn. ``lazy_hypercolumn`` convolves the
    hypercolumn factorised (same result, ~10× fewer FLOPs in the first layer); ``False``
    materialises the 1475-channel tensor as the authors do.
    """
    spec = get_variant(variant)
    if hypercolumn:
        vgg = vgg if vgg is not None else load_vgg19(vgg_weights, vgg_path, vgg_seed)
        features: nn.Module = Hypercolumn(vgg, lazy=lazy_hypercolumn)
        in_channels = HYPERCOLUMN_CHANNELS
    else:
        features, in_channels = nn.Identity(), 3
    stages = [_stage(spec, in_channels, width, plain_layers, fuse_streams)
              for _ in range(spec.stages)]
    return SeparationModel(spec, features, *stages)
