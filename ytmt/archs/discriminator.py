"""The ERRNet-style VGG-like discriminator used for the adversarial loss (paper Eq. 6).

Ten 3×3 convs (five of them stride 2) with GroupNorm and LeakyReLU(0.2), global
average pooling, then 1×1 convs 8w → 16w → 1. Outputs raw logits (B,1,1,1); the sigmoid is
inside the relativistic BCE loss. ``width`` = 64 in the paper.
"""

from __future__ import annotations

from torch import Tensor, nn


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels), channels)


class Discriminator(nn.Module):
    """(B,C,H,W) image in [0,1] → (B,1,1,1) realness logits."""

    def __init__(self, in_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        w = width
        # (in, out, stride): 64 64/2 128 128/2 256 256/2 512 512/2 512 512/2 for w = 64.
        plan = [(w, w, 2), (w, 2 * w, 1), (2 * w, 2 * w, 2), (2 * w, 4 * w, 1),
                (4 * w, 4 * w, 2), (4 * w, 8 * w, 1), (8 * w, 8 * w, 2), (8 * w, 8 * w, 1),
                (8 * w, 8 * w, 2)]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, w, 3, padding=1), nn.LeakyReLU(0.2)]
        for cin, cout, stride in plan:
            layers += [nn.Conv2d(cin, cout, 3, stride=stride, padding=1), _norm(cout),
                       nn.LeakyReLU(0.2)]
        self.body = nn.Sequential(*layers)
        self.tail = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(8 * w, 16 * w, 1),
                                  nn.LeakyReLU(0.2), nn.Conv2d(16 * w, 1, 1))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")

    def forward(self, x: Tensor) -> Tensor:
        return self.tail(self.body(x))
