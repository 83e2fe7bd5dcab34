"""Baseline for the benchmarks: the YTMT generator step organised as the authors run it.

Same math as ``ytmt`` (the bench checks the outputs agree before timing), but structured
the way the authors' implementation executes it: each stream's convolutions run
separately (stage 1's first conv reads the 1475-channel hypercolumn twice), the
rectifier pair is computed as ``x − ReLU(x)``, and the perceptual loss runs VGG four times
(T̂, T, R̂, R) in NCHW. Weights are copied from a :class:`ytmt.SeparationModel`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ytmt.archs.vgg import imagenet_normalize
from ytmt.config import LossConfig
from ytmt.losses import exclusion_loss, gradient_l1


def _att(x: Tensor, m) -> Tensor:
    pa = torch.sigmoid(m.pixel_att.expand(F.relu(m.pixel_att.reduce(x))))
    x = x * pa
    ca = torch.sigmoid(m.channel_att.expand(F.relu(m.channel_att.reduce(
        F.adaptive_avg_pool2d(x, 1)))))
    return x * ca


class BaselineUNet(nn.Module):
    """Runs a ytmt ``YTMTUNet``'s weights stream by stream, the authors' way."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def _block(self, block, t: Tensor, r: Tensor, attention: bool) -> tuple[Tensor, Tensor]:
        conv = block.conv
        if attention:
            t, r = _att(t, conv.t), _att(r, conv.r)
        t, r = conv.t.conv(t), conv.r.conv(r)
        head = block.head
        tp, tn = F.relu(t), t - F.relu(t)
        rp, rn = F.relu(r), r - F.relu(r)
        if head.fuse_t is None:
            return tp + rn, rp + tn
        return head.fuse_t(torch.cat([tp, rn], 1)), head.fuse_r(torch.cat([rp, tn], 1))

    def _up(self, up, t, r, st, sr):
        t = F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=True)
        r = F.interpolate(r, scale_factor=2, mode="bilinear", align_corners=True)
        dy, dx = st.shape[2] - t.shape[2], st.shape[3] - t.shape[3]
        pad = [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2]
        t, r = F.pad(t, pad), F.pad(r, pad)
        return self._block(up.block, torch.cat([st, t], 1), torch.cat([sr, r], 1), True)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        n = self.net
        s1 = self._block(n.inc, x, x, attention=False)
        s2 = self._block(n.down1.block, *(F.max_pool2d(v, 2) for v in s1), True)
        s3 = self._block(n.down2.block, *(F.max_pool2d(v, 2) for v in s2), True)
        s4 = self._block(n.down3.block, *(F.max_pool2d(v, 2) for v in s3), True)
        t, r = self._block(n.down4.block, *(F.max_pool2d(v, 2) for v in s4), True)
        t, r = self._up(n.up1, t, r, *s4)
        t, r = self._up(n.up2, t, r, *s3)
        t, r = self._up(n.up3, t, r, *s2)
        t, r = self._up(n.up4, t, r, *s1)
        return torch.sigmoid(n.out.conv_t(t)), torch.sigmoid(n.out.conv_r(r))


def baseline_hypercolumn(vgg, x: Tensor) -> Tensor:
    feats = vgg(x)
    ups = [F.interpolate(f, size=x.shape[-2:], mode="bilinear", align_corners=False)
           for f in feats]
    return torch.cat([x, *ups], 1).detach()


def baseline_perceptual(vgg, pred: Tensor, target: Tensor, weights) -> Tensor:
    fp = vgg(imagenet_normalize(pred))
    ft = vgg(imagenet_normalize(target))
    return sum(w * F.l1_loss(a, b.detach()) for w, a, b in zip(weights, fp, ft, strict=True))


def baseline_step(model, vgg, unet: BaselineUNet, batch, cfg: LossConfig) -> Tensor:
    """One generator loss (rec + perceptual on T and R + exclusion), authors' structure."""
    mixture, t, r = batch
    t_hat, r_hat = unet(baseline_hypercolumn(vgg, mixture))
    rec = (cfg.rec_t_mse * F.mse_loss(t_hat, t) + cfg.rec_r_mse * F.mse_loss(r_hat, r)
           + cfg.rec_t_grad * gradient_l1(t_hat, t)
           + cfg.rec_sum_l1 * F.l1_loss(t_hat + r_hat, mixture))
    per = (baseline_perceptual(vgg, t_hat, t, cfg.perceptual_layer_weights)
           + baseline_perceptual(vgg, r_hat, r, cfg.perceptual_layer_weights))
    exc = exclusion_loss(t_hat, r_hat, cfg.exclusion_levels)
    return rec + cfg.perceptual * per + cfg.exclusion * exc
