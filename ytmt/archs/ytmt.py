"""YTMT dual-stream networks, bottom-up as in the paper (Sec. 3, Fig. 1-2).

Two streams run side by side: the transmission stream ``t`` and the reflection stream
``r``. Every block ends in a YTMT head that applies the rectifier pair

    ReLU(x) = max(x, 0),    ReLU⁻(x) = x − ReLU(x) = min(x, 0)              (Eq. 1)

and hands each stream what the other stream's rectifier would discard:

    t' = ReLU(t) ⊕ ReLU⁻(r),    r' = ReLU(r) ⊕ ReLU⁻(t)                      (Eq. 2)

with ⊕ an addition (pattern A) or a channel concatenation followed by a 1×1 conv per
stream (pattern C). Two ablation heads of the paper's Table 4 are the same block with a
different exchange: ``NONE`` ("w/o FI": each stream keeps only its own ReLU) and
``RELU_ONLY`` (the concat head fed ReLU of the other stream instead of ReLU⁻).

Layout (``B`` batch, ``C`` channels, ``H×W`` any size ≥ 16×16):

    mixture (B,3,H,W) ─► hypercolumn (B,1475,H,W) ─► stage 1 ─► T̂₁, R̂₁ (B,3,H,W)
    two-stage only:  hypercolumn(T̂₁) ─► stage 2 (t stream), hypercolumn(R̂₁) ─► (r stream)

Tensors flowing between blocks are ``(t, r)`` pairs. ``DualConv2d`` may run both streams'
convolutions as one grouped convolution (``fuse_streams=True``); the parameters, and so
checkpoints, are the same either way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ytmt.archs.vgg import HypercolumnFeatures

# The variant table is torch-free data (ytmt.variants); re-exported here for the networks.
from ytmt.variants import VARIANTS, Exchange, Variant, get_variant  # noqa: F401

Pair = tuple[Tensor, Tensor]

HYPERCOLUMN_CHANNELS = 1475  # RGB 3 + VGG-19 taps 64 + 128 + 256 + 512 + 512


# --------------------------------------------------------------------------- rectifier pair

def relu_neg(x: Tensor) -> Tensor:
    """Negative ReLU, ``ReLU⁻(x) = x − ReLU(x) = min(x, 0)`` (Eq. 1)."""
    return torch.clamp(x, max=0.0)


class YTMTHead(nn.Module):
    """Rectifies both streams and exchanges what ``exchange`` says. Input and output (B,C,H,W)."""

    def __init__(self, channels: int, exchange: Exchange) -> None:
        super().__init__()
        self.exchange = exchange
        merges = exchange in (Exchange.CONCAT, Exchange.RELU_ONLY)
        # One 1×1 conv per stream maps the concatenation 2C back to C.
        self.fuse_t = nn.Conv2d(2 * channels, channels, 1) if merges else None
        self.fuse_r = nn.Conv2d(2 * channels, channels, 1) if merges else None

    def forward(self, t: Tensor, r: Tensor) -> Pair:
        pos_t, pos_r = F.relu(t), F.relu(r)
        if self.exchange is Exchange.NONE:
            return pos_t, pos_r
        if self.exchange is Exchange.ADD:
            return pos_t + relu_neg(r), pos_r + relu_neg(t)
        if self.exchange is Exchange.CONCAT:
            give_t, give_r = relu_neg(r), relu_neg(t)
        else:
            give_t, give_r = pos_r, pos_t
        return (self.fuse_t(torch.cat([pos_t, give_t], dim=1)),
                self.fuse_r(torch.cat([pos_r, give_r], dim=1)))


# --------------------------------------------------------------------------- attention

def _squeezed(channels: int) -> int:
    # c/8 as in the paper's attention; at least 1 so tiny test widths still build.
    return max(1, channels // 8)


class PixelAttention(nn.Module):
    """``x · σ(conv(ReLU(conv(x))))`` with a one-channel (B,1,H,W) map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, _squeezed(channels), 1)
        self.expand = nn.Conv2d(_squeezed(channels), 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.expand(F.relu(self.reduce(x))))


class ChannelAttention(nn.Module):
    """``x · σ(conv(ReLU(conv(avgpool(x)))))`` with a (B,C,1,1) map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, _squeezed(channels), 1)
        self.expand = nn.Conv2d(_squeezed(channels), channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        pooled = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(F.relu(self.reduce(pooled))))


class StreamConv(nn.Module):
    """One stream's pre-activation path: [pixel att. → channel att. →] 3×3 conv in→out."""

    def __init__(self, in_channels: int, out_channels: int, attention: bool,
                 bias: bool = True) -> None:
        super().__init__()
        self.pixel_att = PixelAttention(in_channels) if attention else nn.Identity()
        self.channel_att = ChannelAttention(in_channels) if attention else nn.Identity()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias)

    def attend(self, x: Tensor) -> Tensor:
        return self.channel_att(self.pixel_att(x))


class DualConv2d(nn.Module):
    """Both streams' ``StreamConv``; optionally their 3×3 convs as one grouped convolution.

    When both streams read the same input (stage 1's first block) the two convs always run
    as one conv with 2·out channels, so the input is read once instead of twice. A lazy
    hypercolumn input (:class:`~ytmt.archs.vgg.HypercolumnFeatures`) is convolved factorised,
    at the VGG taps' own resolutions.
    """

    def __init__(self, in_channels: int, out_channels: int, attention: bool,
                 fuse_streams: bool = False, bias: bool = True) -> None:
        super().__init__()
        self.t = StreamConv(in_channels, out_channels, attention, bias)
        self.r = StreamConv(in_channels, out_channels, attention, bias)
        self.fuse_streams = fuse_streams

    def _joint_weights(self) -> tuple[Tensor, Tensor | None]:
        weight = torch.cat([self.t.conv.weight, self.r.conv.weight])
        bias = None
        if self.t.conv.bias is not None:
            bias = torch.cat([self.t.conv.bias, self.r.conv.bias])
        return weight, bias

    def _joint(self, x: Tensor, groups: int) -> Tensor:
        return F.conv2d(x, *self._joint_weights(), padding=1, groups=groups)

    def forward(self, t: Tensor | HypercolumnFeatures, r: Tensor | HypercolumnFeatures) -> Pair:
        if isinstance(t, HypercolumnFeatures):  # the first block of a hypercolumn network
            if t is r:
                return t.conv3x3(*self._joint_weights()).chunk(2, dim=1)
            return (t.conv3x3(self.t.conv.weight, self.t.conv.bias),
                    r.conv3x3(self.r.conv.weight, self.r.conv.bias))
        if t is r and isinstance(self.t.pixel_att, nn.Identity):
            return self._joint(t, groups=1).chunk(2, dim=1)
        t, r = self.t.attend(t), self.r.attend(r)
        if self.fuse_streams:
            return self._joint(torch.cat([t, r], dim=1), groups=2).chunk(2, dim=1)
        return self.t.conv(t), self.r.conv(r)


class YTMTBlock(nn.Module):
    """Dual-stream block: per stream (attention →) 3×3 conv, then the YTMT head (Fig. 1b/c)."""

    def __init__(self, in_channels: int, out_channels: int, exchange: Exchange,
                 attention: bool = True, fuse_streams: bool = False) -> None:
        super().__init__()
        self.conv = DualConv2d(in_channels, out_channels, attention, fuse_streams)
        self.head = YTMTHead(out_channels, exchange)

    def forward(self, t: Tensor, r: Tensor) -> Pair:
        return self.head(*self.conv(t, r))


class DownBlock(nn.Module):
    """2×2 max-pool each stream, then a YTMT block: (B,C,H,W) → (B,C',H/2,W/2)."""

    def __init__(self, in_channels: int, out_channels: int, exchange: Exchange,
                 fuse_streams: bool = False) -> None:
        super().__init__()
        self.block = YTMTBlock(in_channels, out_channels, exchange, True, fuse_streams)

    def forward(self, t: Tensor, r: Tensor) -> Pair:
        return self.block(F.max_pool2d(t, 2), F.max_pool2d(r, 2))


def _upsample_to(x: Tensor, skip: Tensor) -> Tensor:
    """Bilinear ×2 (align_corners=True), then zero-pad to the skip's H×W (odd sizes)."""
    x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
    dy, dx = skip.shape[2] - x.shape[2], skip.shape[3] - x.shape[3]
    if dy or dx:
        x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
    return x


class UpBlock(nn.Module):
    """Upsample each stream, concatenate [skip, upsampled] per stream, YTMT block."""

    def __init__(self, in_channels: int, out_channels: int, exchange: Exchange,
                 fuse_streams: bool = False) -> None:
        super().__init__()
        self.block = YTMTBlock(in_channels, out_channels, exchange, True, fuse_streams)

    def forward(self, t: Tensor, r: Tensor, skip_t: Tensor, skip_r: Tensor) -> Pair:
        t = torch.cat([skip_t, _upsample_to(t, skip_t)], dim=1)
        r = torch.cat([skip_r, _upsample_to(r, skip_r)], dim=1)
        return self.block(t, r)


class OutBlock(nn.Module):
    """Per stream 3×3 conv C→3 and sigmoid: outputs in [0, 1]."""

    def __init__(self, in_channels: int, bias: bool = True) -> None:
        super().__init__()
        self.conv_t = nn.Conv2d(in_channels, 3, 3, padding=1, bias=bias)
        self.conv_r = nn.Conv2d(in_channels, 3, 3, padding=1, bias=bias)

    def forward(self, t: Tensor, r: Tensor) -> Pair:
        return torch.sigmoid(self.conv_t(t)), torch.sigmoid(self.conv_r(r))


# --------------------------------------------------------------------------- networks

class YTMTUNet(nn.Module):
    """U-shaped YTMT network (Fig. 2a). Widths w·(1, 2, 4, 8, 8); w = 64 in the paper."""

    def __init__(self, in_channels: int, exchange: Exchange, width: int = 64,
                 fuse_streams: bool = False) -> None:
        super().__init__()
        w = width
        kw = {"exchange": exchange, "fuse_streams": fuse_streams}
        self.inc = YTMTBlock(in_channels, w, attention=False, **kw)
        self.down1 = DownBlock(w, 2 * w, **kw)
        self.down2 = DownBlock(2 * w, 4 * w, **kw)
        self.down3 = DownBlock(4 * w, 8 * w, **kw)
        self.down4 = DownBlock(8 * w, 8 * w, **kw)
        self.up1 = UpBlock(16 * w, 4 * w, **kw)
        self.up2 = UpBlock(8 * w, 2 * w, **kw)
        self.up3 = UpBlock(4 * w, w, **kw)
        self.up4 = UpBlock(2 * w, w, **kw)
        self.out = OutBlock(w)

    def forward(self, x_t: Tensor, x_r: Tensor) -> Pair:
        s1 = self.inc(x_t, x_r)        # (B, w, H, W) each
        s2 = self.down1(*s1)           # (B, 2w, H/2, W/2)
        s3 = self.down2(*s2)           # (B, 4w, H/4, W/4)
        s4 = self.down3(*s3)           # (B, 8w, H/8, W/8)
        t, r = self.down4(*s4)         # (B, 8w, H/16, W/16)
        t, r = self.up1(t, r, *s4)
        t, r = self.up2(t, r, *s3)
        t, r = self.up3(t, r, *s2)
        t, r = self.up4(t, r, *s1)
        return self.out(t, r)


class YTMTPlainNet(nn.Module):
    """Plain YTMT network (Fig. 2b): first block, ``layers − 2`` attention blocks, output.

    As in the authors' denoising code, the output convs have no bias.
    """

    def __init__(self, in_channels: int, exchange: Exchange, width: int = 64,
                 layers: int = 10, fuse_streams: bool = False) -> None:
        super().__init__()
        self.first = YTMTBlock(in_channels, width, exchange, attention=False,
                               fuse_streams=fuse_streams)
        self.body = nn.ModuleList(
            YTMTBlock(width, width, exchange, attention=True, fuse_streams=fuse_streams)
            for _ in range(layers - 2))
        self.out = OutBlock(width, bias=False)

    def forward(self, x_t: Tensor, x_r: Tensor) -> Pair:
        t, r = self.first(x_t, x_r)
        for block in self.body:
            t, r = block(t, r)
        return self.out(t, r)


# --------------------------------------------------------------------------- variants

def build_stage(variant: Variant, in_channels: int, width: int, plain_layers: int = 10,
                fuse_streams: bool = False) -> nn.Module:
    """One stage network of ``variant`` (no hypercolumn); the released backbone is built by
    :func:`ytmt.archs.build.build_model`."""
    if variant.backbone == "unet":
        return YTMTUNet(in_channels, variant.exchange, width, fuse_streams)
    if variant.backbone != "plain":
        raise ValueError(f"{variant.name}: backbone {variant.backbone!r} is built by build_model")
    return YTMTPlainNet(in_channels, variant.exchange, width, plain_layers, fuse_streams)


# --------------------------------------------------------------------------- full model

class SeparationModel(nn.Module):
    """Mixture (B,3,H,W) in [0,1] → (T̂, R̂), each (B,3,H,W) in [0,1].

    ``features`` maps RGB to the network input: a :class:`~ytmt.archs.vgg.Hypercolumn`
    (1475 channels, never trained) or ``nn.Identity`` (3 channels). For two-stage variants
    ``stage1`` is frozen and stage 2 reads hypercolumn(T̂₁) in its t stream and
    hypercolumn(R̂₁) in its r stream.
    """

    def __init__(self, variant: Variant, features: nn.Module, stage1: nn.Module,
                 stage2: nn.Module | None = None) -> None:
        super().__init__()
        self.variant_name = variant.name
        self.features = features
        self.stage1 = stage1
        self.stage2 = stage2
        self.features.requires_grad_(False)
        if stage2 is not None:
            self.stage1.requires_grad_(False)

    @property
    def variant(self) -> Variant:
        return VARIANTS[self.variant_name]

    def forward_stages(self, mixture: Tensor) -> list[Pair]:
        """Outputs of every stage, first to last."""
        x = self.features(mixture)
        if self.stage2 is None:
            return [self.stage1(x, x)]
        with torch.no_grad():
            t1, r1 = self.stage1(x, x)
        return [(t1, r1), self.stage2(self.features(t1), self.features(r1))]

    def forward(self, mixture: Tensor) -> Pair:
        return self.forward_stages(mixture)[-1]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def load_stage1(self, state: dict[str, Tensor], init_stage2: bool = True) -> None:
        """Load a trained stage 1 from its stage state dict (the ``stage1.*`` entries of a
        single-stage model without the prefix), freeze it and, as in the paper, initialise
        stage 2 from the same weights. From a checkpoint file:
        :func:`ytmt.checkpoint.load_stage1` (which also checks the VGG)."""
        if self.stage2 is None:
            raise ValueError(f"{self.variant_name} is single-stage; it has no stage 1 to load")
        self.stage1.load_state_dict(state)
        self.stage1.requires_grad_(False)
        if init_stage2:
            self.stage2.load_state_dict(state)
