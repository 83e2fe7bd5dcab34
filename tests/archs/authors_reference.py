"""An independent statement of the authors' legacy network and test-time forward, for tests.

Written from the structure of ``YTMTUNet`` in ``models/arch/unet.py`` of mingcv/YTMT-Strategy
(``--inet ytmt_ucs_old``) and ``TwoStageYTMTNetModel``'s forward, without using
``ytmt.archs.released``: the same module names (so ``state_dict()`` has the authors' keys)
and the same wiring, in plain torch. Width ``w`` stands for their hard-coded 64; their
channel plan scales with it (128 = 2w, 1024 = 16w, 512 // 2 = 4w, ...). The hypercolumn is
computed densely from a torchvision-format VGG state dict with ``F.conv2d``.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from tests.archs.test_vgg import reference_taps, save_hash_named, torchvision_format_state_dict


class _PixelGate(nn.Module):  # their PALayer: x · σ(conv(ReLU(conv(x)))), 1-channel map
    def __init__(self, c):
        super().__init__()
        self.pa = nn.Sequential(nn.Conv2d(c, c // 8, 1), nn.ReLU(), nn.Conv2d(c // 8, 1, 1),
                                nn.Sigmoid())

    def forward(self, x):
        return x * self.pa(x)


class _ChannelGate(nn.Module):  # their CALayer: global average pool, then a c-channel gate
    def __init__(self, c):
        super().__init__()
        self.ca = nn.Sequential(nn.Conv2d(c, c // 8, 1), nn.ReLU(), nn.Conv2d(c // 8, c, 1),
                                nn.Sigmoid())

    def forward(self, x):
        return x * self.ca(x.mean(dim=(2, 3), keepdim=True))


def _split(y):
    pos = F.relu(y)
    return pos, y - pos


class _Block(nn.Module):  # their CoReLUAttBlock (pool=False) and Down (pool=True)
    def __init__(self, cin, cout, pool):
        super().__init__()
        self.fusion = nn.Conv2d(2 * cin, cin, 1)
        head = [nn.MaxPool2d(2)] if pool else []
        self.model = nn.Sequential(*head, nn.Conv2d(cin, cout, 3, padding=1), _PixelGate(cout),
                                   _ChannelGate(cout))

    def forward(self, x, other_neg=None):
        if other_neg is not None:
            x = self.fusion(torch.cat([x, other_neg], 1))
        return _split(self.model(x))


class _Up(nn.Module):  # their Up: two fusions (fusion_rate 1), upsample, [skip, deep], conv
    def __init__(self, cin, cout):
        super().__init__()
        self.fusion_1 = nn.Conv2d(cin, cin, 1)
        self.fusion_2 = nn.Conv2d(cin, cin, 1)
        self.model = nn.Sequential(nn.Conv2d(2 * cin, cout, 3, padding=1), _PixelGate(cout),
                                   _ChannelGate(cout))

    def forward(self, pos, other_neg, skip_pos, skip_other_neg):
        deep = self.fusion_1(torch.cat([pos, other_neg], 1))
        skip = self.fusion_2(torch.cat([skip_pos, skip_other_neg], 1))
        deep = F.interpolate(deep, scale_factor=2, mode="bilinear", align_corners=True)
        dy, dx = skip.shape[2] - deep.shape[2], skip.shape[3] - deep.shape[3]
        deep = F.pad(deep, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return _split(self.model(torch.cat([skip, deep], 1)))


class _Out(nn.Module):  # their CoOutConv(2w, 3): fusion 2w→2w, 3×3 conv, sigmoid
    def __init__(self, c):
        super().__init__()
        self.fusion = nn.Conv2d(c, c, 1)
        self.conv = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, pos, other_neg):
        return torch.sigmoid(self.conv(self.fusion(torch.cat([pos, other_neg], 1))))


class AuthorsUNet(nn.Module):
    """Their YTMTUNet at width w: streams _1 (T) and _2 (R)."""

    def __init__(self, cin, w):
        super().__init__()
        self.inc_1, self.inc_2 = _Block(cin, w, False), _Block(cin, w, False)
        for k, (i, o) in enumerate([(w, 2 * w), (2 * w, 4 * w), (4 * w, 8 * w), (8 * w, 8 * w)], 1):
            setattr(self, f"down{k}_1", _Block(i, o, True))
            setattr(self, f"down{k}_2", _Block(i, o, True))
        for k, (i, o) in enumerate([(16 * w, 4 * w), (8 * w, 2 * w), (4 * w, w), (2 * w, w)], 1):
            setattr(self, f"up{k}_1", _Up(i, o))
            setattr(self, f"up{k}_2", _Up(i, o))
        self.outc_1, self.outc_2 = _Out(2 * w), _Out(2 * w)

    def forward(self, x, y=None):
        a, b = self.inc_1(x), self.inc_2(x if y is None else y)  # (pos, neg) per stream
        levels = [(a, b)]
        for k in range(1, 5):
            a, b = (getattr(self, f"down{k}_1")(a[0], b[1]),
                    getattr(self, f"down{k}_2")(b[0], a[1]))
            levels.append((a, b))
        for k in range(1, 5):
            sa, sb = levels[4 - k]
            a, b = (getattr(self, f"up{k}_1")(a[0], b[1], sa[0], sb[1]),
                    getattr(self, f"up{k}_2")(b[0], a[1], sb[0], sa[1]))
        return self.outc_1(a[0], b[1]), self.outc_2(b[0], a[1])


def hypercolumn(vgg_state, x):
    """[x, the five VGG taps upsampled bilinearly (align_corners=False)]: (B,1475,H,W)."""
    taps = [F.interpolate(t, size=x.shape[-2:], mode="bilinear", align_corners=False)
            for t in reference_taps(vgg_state, x)]
    return torch.cat([x, *taps], 1)


@torch.no_grad()
def two_stage_forward(net1, net2, vgg_state, mixture):
    """Their test forward: stage 1 on hypercolumn(I); stage 2 on hypercolumn(T̂₁) and
    hypercolumn(R̂₁); (T̂, R̂) = stage 2's outputs."""
    t1, r1 = net1(hypercolumn(vgg_state, mixture))
    return net2(hypercolumn(vgg_state, t1), hypercolumn(vgg_state, r1))


def signal_preserving_init(net, gen):
    """He-normal conv weights, small random biases, +1 on the attention bottlenecks' biases.

    PyTorch's default init shrinks the signal through ~20 gated blocks until the output no
    longer depends on the deep layers, so a wiring error there would hide under 1e-5; with this
    init every conv and exchange visibly moves the output (tests check the gradients)."""
    with torch.no_grad():
        for name, m in net.named_modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                m.weight.normal_(0.0, math.sqrt(2.0 / fan_in), generator=gen)
                m.bias.normal_(0.0, 0.1, generator=gen)
                if name.endswith(("pa.0", "ca.0")):
                    m.bias.add_(1.0)
    return net


def random_authors_nets(width, seed=0, cin=1475):
    """Two random AuthorsUNet (stage 1, stage 2) with :func:`signal_preserving_init`, eval mode."""
    gen = torch.Generator().manual_seed(seed)
    return tuple(signal_preserving_init(AuthorsUNet(cin, width), gen).eval() for _ in range(2))


def save_released(path, net1, net2=None, epoch=68, iterations=595364, **extra):
    """The released layout: {icnn, icnn2 (omitted when net2 is None), epoch, iterations}."""
    state = {"icnn": net1.state_dict(), "epoch": epoch, "iterations": iterations, **extra}
    if net2 is not None:
        state["icnn2"] = net2.state_dict()
    torch.save(state, path)
    return path


def save_hash_named_vgg(folder, seed=1):
    """A random torchvision-format VGG-19 saved as ``vgg19-<its own sha256[:8]>.pth``.
    Returns (path, state dict)."""
    state = torchvision_format_state_dict(seed)
    return save_hash_named(state, folder), state
