"""The authors' released network: the legacy YTMT U-Net their SIRS weights need.

Their README loads the released ``ytmt_uct_sirs_68_077_00595364.pt`` with
``--inet ytmt_ucs_old``, which selects ``YTMTUNet`` in ``models/arch/unet.py`` of
mingcv/YTMT-Strategy, not the ``YTMT_US`` that :class:`ytmt.archs.ytmt.YTMTUNet` ports.
It is the same strategy (Eq. 1-2 with a concat exchange, pattern C), wired differently:

- every block *ends* by splitting each stream into its ReLU and ReLU⁻ parts, and the *next*
  block opens with the exchange: per stream a 1×1 conv of [own ReLU part, other stream's
  ReLU⁻ part];
- attention follows the 3×3 conv (conv → pixel attention → channel attention);
- a down block exchanges at full resolution, then max-pools;
- an up block exchanges its deep input (before upsampling) and its skip separately, each
  with its own 1×1 conv that keeps the concatenation's 2C channels, then concatenates
  [skip, upsampled deep] and convolves;
- the output block exchanges (2w → 2w channels), then a 3×3 conv to RGB and a sigmoid;
- the first block owns an exchange conv (2·C_in → C_in: 4.35 M parameters per stream at
  1475 channels) that the authors' forward never calls. It is kept, frozen, so that their
  state dict maps one to one and the parameter count is theirs: 38,448,530 per stage at
  width 64 with the 1475-channel hypercolumn.

Layout: a stream's state at level k is a :data:`Split` (ReLU part, ReLU⁻ part), each
(B, C_k, H/2^k, W/2^k) with C = w·(1, 2, 4, 8, 8). Stage 1 feeds both streams the same
hypercolumn; the two-stage wiring (stage 2 reads hypercolumn(T̂₁) and hypercolumn(R̂₁), T̂ is
its first output) is :class:`ytmt.archs.ytmt.SeparationModel`'s, exactly as the authors' test
forward does it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ytmt.archs.vgg import HypercolumnFeatures
from ytmt.archs.ytmt import (
    ChannelAttention,
    DualConv2d,
    OutBlock,
    Pair,
    PixelAttention,
    _upsample_to,
    relu_neg,
)

Split = tuple[Tensor, Tensor]  # (ReLU(x), ReLU⁻(x)) of one stream's pre-activation x


def split_rectified(x: Tensor) -> Split:
    """(ReLU(x), ReLU⁻(x)) of (B,C,H,W) x; the two parts sum to x."""
    return F.relu(x), relu_neg(x)


class CrossExchange(nn.Module):
    """Per stream a 1×1 conv of [own ReLU part, other stream's ReLU⁻ part]:
    (B,2C,H,W) → (B,C_out,H,W). The legacy network's form of the YTMT exchange."""

    def __init__(self, channels: int, out_channels: int) -> None:
        super().__init__()
        self.t = nn.Conv2d(2 * channels, out_channels, 1)
        self.r = nn.Conv2d(2 * channels, out_channels, 1)

    def forward(self, t: Split, r: Split) -> Pair:
        return (self.t(torch.cat([t[0], r[1]], dim=1)),
                self.r(torch.cat([r[0], t[1]], dim=1)))


class PostAttention(nn.Module):
    """Pixel attention then channel attention on a conv's output (B,C,H,W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pixel_att = PixelAttention(channels)
        self.channel_att = ChannelAttention(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.channel_att(self.pixel_att(x))


class AttentiveConv(nn.Module):
    """Per stream 3×3 conv in→out → pixel att. → channel att., then the ReLU/ReLU⁻ split."""

    def __init__(self, in_channels: int, out_channels: int, fuse_streams: bool = False) -> None:
        super().__init__()
        self.conv = DualConv2d(in_channels, out_channels, attention=False,
                               fuse_streams=fuse_streams)
        self.att_t = PostAttention(out_channels)
        self.att_r = PostAttention(out_channels)

    def forward(self, t: Tensor | HypercolumnFeatures,
                r: Tensor | HypercolumnFeatures) -> tuple[Split, Split]:
        t, r = self.conv(t, r)
        return split_rectified(self.att_t(t)), split_rectified(self.att_r(r))


class ReleasedInBlock(nn.Module):
    """First block: each stream's input (B,C_in,H,W) → attentive conv → Splits (B,w,H,W).

    ``idle_exchange`` is the authors' exchange conv of this block, which their forward never
    calls: held (frozen) only so their weights load one to one."""

    def __init__(self, in_channels: int, out_channels: int, fuse_streams: bool = False) -> None:
        super().__init__()
        self.idle_exchange = CrossExchange(in_channels, in_channels).requires_grad_(False)
        self.conv = AttentiveConv(in_channels, out_channels, fuse_streams)

    def forward(self, x_t: Tensor | HypercolumnFeatures,
                x_r: Tensor | HypercolumnFeatures) -> tuple[Split, Split]:
        return self.conv(x_t, x_r)


class ReleasedDown(nn.Module):
    """Exchange (2C→C) at full size, 2×2 max-pool, attentive conv: Splits (B,C,H,W) →
    Splits (B,C',H/2,W/2)."""

    def __init__(self, in_channels: int, out_channels: int, fuse_streams: bool = False) -> None:
        super().__init__()
        self.exchange = CrossExchange(in_channels, in_channels)
        self.conv = AttentiveConv(in_channels, out_channels, fuse_streams)

    def forward(self, t: Split, r: Split) -> tuple[Split, Split]:
        t_in, r_in = self.exchange(t, r)
        return self.conv(F.max_pool2d(t_in, 2), F.max_pool2d(r_in, 2))


class ReleasedUp(nn.Module):
    """Deep Splits (B,C/2,h,w) and skip Splits (B,C/2,2h,2w), C = ``in_channels``: each
    exchanged by its own 1×1 conv (→ C), the deep one upsampled ×2 (bilinear,
    align_corners=True, padded to the skip), [skip, deep] (B,2C,2h,2w) → attentive conv →
    Splits (B,C_out,2h,2w)."""

    def __init__(self, in_channels: int, out_channels: int, fuse_streams: bool = False) -> None:
        super().__init__()
        self.exchange_deep = CrossExchange(in_channels // 2, in_channels)
        self.exchange_skip = CrossExchange(in_channels // 2, in_channels)
        self.conv = AttentiveConv(2 * in_channels, out_channels, fuse_streams)

    def forward(self, t: Split, r: Split, skip_t: Split, skip_r: Split) -> tuple[Split, Split]:
        deep_t, deep_r = self.exchange_deep(t, r)
        near_t, near_r = self.exchange_skip(skip_t, skip_r)
        return self.conv(torch.cat([near_t, _upsample_to(deep_t, near_t)], dim=1),
                         torch.cat([near_r, _upsample_to(deep_r, near_r)], dim=1))


class ReleasedOut(nn.Module):
    """Exchange (2w→2w), then per stream 3×3 conv 2w→3 and sigmoid: outputs in [0, 1]."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.exchange = CrossExchange(width, 2 * width)
        self.out = OutBlock(2 * width)

    def forward(self, t: Split, r: Split) -> Pair:
        return self.out(*self.exchange(t, r))


class ReleasedUNet(nn.Module):
    """The authors' legacy YTMT U-Net (``ytmt_ucs_old``), widths w·(1, 2, 4, 8, 8); w = 64
    in their released weights. (x_t, x_r) (B,C_in,H,W) → (T̂, R̂) (B,3,H,W) in [0, 1]."""

    def __init__(self, in_channels: int, width: int = 64, fuse_streams: bool = False) -> None:
        super().__init__()
        w, kw = width, {"fuse_streams": fuse_streams}
        self.inc = ReleasedInBlock(in_channels, w, **kw)
        self.down1 = ReleasedDown(w, 2 * w, **kw)
        self.down2 = ReleasedDown(2 * w, 4 * w, **kw)
        self.down3 = ReleasedDown(4 * w, 8 * w, **kw)
        self.down4 = ReleasedDown(8 * w, 8 * w, **kw)
        self.up1 = ReleasedUp(16 * w, 4 * w, **kw)
        self.up2 = ReleasedUp(8 * w, 2 * w, **kw)
        self.up3 = ReleasedUp(4 * w, w, **kw)
        self.up4 = ReleasedUp(2 * w, w, **kw)
        self.out = ReleasedOut(w)

    def forward(self, x_t: Tensor | HypercolumnFeatures,
                x_r: Tensor | HypercolumnFeatures) -> Pair:
        s1 = self.inc(x_t, x_r)        # Splits (B, w, H, W)
        s2 = self.down1(*s1)           # (B, 2w, H/2, W/2)
        s3 = self.down2(*s2)           # (B, 4w, H/4, W/4)
        s4 = self.down3(*s3)           # (B, 8w, H/8, W/8)
        t, r = self.down4(*s4)         # (B, 8w, H/16, W/16)
        t, r = self.up1(t, r, *s4)     # (B, 4w, H/8, W/8)
        t, r = self.up2(t, r, *s3)     # (B, 2w, H/4, W/4)
        t, r = self.up3(t, r, *s2)     # (B, w, H/2, W/2)
        t, r = self.up4(t, r, *s1)     # (B, w, H, W)
        return self.out(t, r)          # (B, 3, H, W) each
