"""VGG-19 feature stack with torchvision's parameter names, and the hypercolumn.

torchvision is not a dependency: the conv stack is defined here as ``features.<i>`` so
that torchvision's ``vgg19-dcbb9e9d.pth`` loads unchanged. Only modules 0-29 are kept:
the five taps the method uses are the outputs of modules 1, 6, 11, 20 and 29 (the
authors' ``indices=[2, 7, 12, 21, 30]``, "output after module i−1"). The paper and the
authors' code call them relu1_2 ... relu5_2; in torchvision's numbering they are the ReLUs
after conv1_1, conv2_1, conv3_1, conv4_1 and conv5_1. Channels: 64, 128, 256, 512, 512.

Weight modes (``ModelConfig.vgg_weights``):
- ``imagenet``: the real weights or a clear error saying where we looked;
- ``auto``: the real weights when found, else seeded random weights and a loud warning;
- ``random``: seeded random weights (tests, smoke runs).
The mode actually used is returned as :class:`VGGWeights` so callers record it (MLflow tag).

A weight file is verified the way torch hub verifies its downloads: a file named
``<name>-<prefix>.<ext>`` (torchvision's ``vgg19-dcbb9e9d.pth``) must have a SHA-256 that
starts with ``<prefix>``, else :class:`VGGWeightsCorrupt`; a found but corrupt file is an
error in every mode, never a silent fallback to random weights.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ytmt.fileio import file_digest

log = logging.getLogger(__name__)

VGG19_FILE = "vgg19-dcbb9e9d.pth"
VGG19_URL = f"https://download.pytorch.org/models/{VGG19_FILE}"
TAPS = (1, 6, 11, 20, 29)
TAP_NAMES = ("relu1_2", "relu2_2", "relu3_2", "relu4_2", "relu5_2")  # the paper's names
TAP_CHANNELS = (64, 128, 256, 512, 512)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision's vgg19 "E" configuration, truncated after module 29.
_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512)


class VGGWeightsMissing(FileNotFoundError):
    """``vgg_weights: imagenet`` and torchvision's VGG-19 file was not found."""


class VGGWeightsCorrupt(ValueError):
    """A weight file's SHA-256 does not start with the prefix its name carries."""


_HASH_PREFIX = re.compile(r"-([a-f0-9]+)\.")  # torch hub's rule (torch.hub.HASH_REGEX)


def hash_prefix(path: str | Path) -> str | None:
    """The SHA-256 prefix a file's name promises (``vgg19-dcbb9e9d.pth`` → ``dcbb9e9d``)."""
    match = _HASH_PREFIX.search(Path(path).name)
    return match.group(1) if match else None


def verify_hash_prefix(path: str | Path) -> str | None:
    """Check the file against the prefix in its name, as torch hub does; returns the prefix
    (None: the name carries none, nothing to check). Raises :class:`VGGWeightsCorrupt`."""
    prefix = hash_prefix(path)
    if prefix is not None:
        digest = file_digest(path)
        if not digest.startswith(prefix):
            raise VGGWeightsCorrupt(
                f"{path}: SHA-256 {digest[:16]}... does not start with {prefix!r} as its name "
                f"says: a corrupt or different file; download {VGG19_URL} again")
    return prefix


@dataclass(frozen=True)
class VGGWeights:
    """Which weights a VGG19Features holds: ``mode`` is ``imagenet`` or ``random``."""

    mode: str
    source: str

    @property
    def is_imagenet(self) -> bool:
        return self.mode == "imagenet"


class VGG19Features(nn.Module):
    """torchvision ``vgg19().features[:30]`` with the same parameter names; frozen."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for v in _CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(in_ch, v, 3, padding=1), nn.ReLU(inplace=False)]
                in_ch = v
        self.features = nn.Sequential(*layers)
        assert len(self.features) == TAPS[-1] + 1
        self.requires_grad_(False)
        self.weights = VGGWeights("random", "torch default init")
        self._cast_cache: dict = {}  # (dtype, device) -> (weights' stamp, cast weights)

    def forward(self, x: Tensor, taps: tuple[int, ...] = TAPS) -> list[Tensor]:
        """Outputs after the modules in ``taps`` for x (B,3,H,W); runs only as deep as needed.

        Under autocast the convolutions use a cached copy of the weights in the autocast
        dtype: the same numbers autocast would make, but cast once while the (frozen)
        weights stay unchanged instead of at every call (autocast caches only parameters
        that require gradients)."""
        cast = self._autocast_weights(x)
        out = []
        for i, module in enumerate(self.features[: max(taps) + 1]):
            if cast is not None and i in cast:
                x = F.conv2d(x, *cast[i], padding=module.padding)
            else:
                x = module(x)
            if i in taps:
                out.append(x)
        return out

    def _autocast_weights(self, x: Tensor) -> dict[int, tuple[Tensor, Tensor]] | None:
        """{module index: (weight, bias)} in the active autocast dtype of ``x``'s device, or
        None when autocast is off (or under torch.compile, which fuses the casts itself)."""
        kind = x.device.type
        if torch.compiler.is_compiling() or not torch.is_autocast_enabled(kind):
            return None
        dtype = torch.get_autocast_dtype(kind)
        convs = {i: m for i, m in enumerate(self.features) if isinstance(m, nn.Conv2d)}
        # a new tensor (load_state_dict, .to()) changes data_ptr; an in-place write _version
        stamp = tuple((m.weight.data_ptr(), m.weight._version, m.bias._version)
                      for m in convs.values())
        key = (dtype, x.device)
        cached = self._cast_cache.get(key)
        if cached is None or cached[0] != stamp:
            with torch.no_grad():
                cached = (stamp, {i: (m.weight.to(dtype), m.bias.to(dtype))
                                  for i, m in convs.items()})
            self._cast_cache = {key: cached}
        return cached[1]

    def load_torchvision(self, path: str | Path) -> None:
        """Load torchvision's VGG-19 state dict (``weights_only``, hash-checked as torch hub
        does: see :func:`verify_hash_prefix`); extra keys are ignored."""
        verify_hash_prefix(path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
            raise ValueError(f"{path}: refused: not a plain torch state dict "
                             f"({str(err).strip().splitlines()[0]})") from None
        if not isinstance(state, dict):
            raise ValueError(f"{path}: not a torchvision VGG-19 state dict")
        ours = self.state_dict()
        missing = [k for k in ours if k not in state]
        if missing:
            raise ValueError(f"{path}: not a torchvision VGG-19 state dict (missing {missing[:3]})")
        for k in ours:
            if state[k].shape != ours[k].shape:
                raise ValueError(f"{path}: {k} has shape {tuple(state[k].shape)}, "
                                 f"expected {tuple(ours[k].shape)}")
        self.load_state_dict({k: state[k] for k in ours})
        self.weights = VGGWeights("imagenet", str(path))

    def randomize(self, seed: int) -> None:
        """Deterministic Kaiming-normal weights (torchvision's VGG init), zero biases."""
        gen = torch.Generator().manual_seed(seed)
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
                with torch.no_grad():
                    m.weight.copy_(torch.randn(m.weight.shape, generator=gen)
                                   * (2.0 / fan_out) ** 0.5)
                    m.bias.zero_()
        self.weights = VGGWeights("random", f"seed={seed}")


def candidate_paths(path: str | Path | None = None) -> list[Path]:
    """Where the ImageNet weights are looked for, in order."""
    found = []
    if path:
        found.append(Path(path).expanduser())
    if os.environ.get("YTMT_VGG19_PATH"):
        found.append(Path(os.environ["YTMT_VGG19_PATH"]).expanduser())
    found.append(Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE)
    return found


def find_vgg19_file(path: str | Path | None = None) -> Path | None:
    """The first of :func:`candidate_paths` that exists (None: no ImageNet weights here)."""
    return next((p for p in candidate_paths(path) if p.is_file()), None)


def random_fallback_warning(path: str | Path | None, seed: int) -> str:
    where = ", ".join(str(p) for p in candidate_paths(path))
    return (f"!!! VGG-19 ImageNet weights NOT FOUND (looked at: {where}). Using SEEDED RANDOM "
            f"weights (seed={seed}) for the hypercolumn and perceptual loss: results are NOT "
            f"comparable with the paper. Download {VGG19_URL} or set model.vgg_path; use "
            f"vgg_weights=imagenet to refuse running without them. !!!")


def warn_if_random(mode: str, path: str | Path | None = None, seed: int = 0) -> bool:
    """Before workers start: say once (log warning) that ``mode`` ``auto`` will fall back to
    random weights here, or that ``random`` was asked for. True if VGG will be random."""
    if mode == "random":
        log.warning("VGG-19: SEEDED RANDOM weights (model.vgg_weights=random, seed=%d): "
                    "results are not comparable with the paper", seed)
        return True
    if mode == "auto" and find_vgg19_file(path) is None:
        log.warning("%s", random_fallback_warning(path, seed))
        return True
    return False


def load_vgg19(mode: str = "auto", path: str | Path | None = None,
               seed: int = 0, warn: bool = True) -> VGG19Features:
    """A frozen VGG19Features per ``mode``; ``.weights`` says what was actually loaded.
    ``warn`` False: no warning when ``auto`` falls back to random weights (the caller said
    so once already, :func:`warn_if_random`)."""
    if mode not in ("imagenet", "auto", "random"):
        raise ValueError(f"vgg_weights = {mode!r}: expected imagenet, auto or random")
    vgg = VGG19Features()
    if mode != "random":
        found = find_vgg19_file(path)
        if found is not None:
            vgg.load_torchvision(found)
            log.info("VGG-19: ImageNet weights from %s", found)
            return vgg.eval()
        if mode == "imagenet":
            where = ", ".join(str(p) for p in candidate_paths(path))
            raise VGGWeightsMissing(
                f"vgg_weights=imagenet but torchvision's VGG-19 weights were not found "
                f"(looked at: {where}). Download {VGG19_URL} to one of those paths, or set "
                f"model.vgg_path (or YTMT_VGG19_PATH) to the file.")
        if warn:
            log.warning("%s", random_fallback_warning(path, seed))
    vgg.randomize(seed)
    return vgg.eval()


class HypercolumnFeatures:
    """A hypercolumn kept factorised: RGB (B,3,H,W) and the five taps at their own sizes.

    ``materialize()`` gives the (B,1475,H,W) tensor: [RGB, taps upsampled bilinearly
    (align_corners=False) to H×W]. ``conv3x3(weight, bias)`` computes
    ``F.conv2d(materialize(), weight, bias, padding=1)`` without ever building it:

        conv3x3(up(f)) = Σ_{dy,dx} shift_{dy,dx}( up( W[:, :, dy, dx] · f ) )

    Bilinear upsampling acts on each channel with the same coefficients, so it commutes
    with the 1×1 channel mix ``W[:, :, dy, dx] · f``, which therefore runs at the tap's own
    resolution (1/4 ... 1/256 of the pixels), and the zero-padded 3×3 neighbourhood becomes
    nine shifted sums, done as two small matmuls with PyTorch's own interpolation
    weights. Exact up to float rounding. Taps at 1/4 ... 1/16 scale (1280 of the 1475
    channels) are factorised; RGB, relu1 and the 1/2-scale tap are convolved densely.
    """

    def __init__(self, rgb: Tensor, taps: list[Tensor]) -> None:
        self.rgb = rgb
        self.taps = taps

    @property
    def channels(self) -> int:
        return self.rgb.shape[1] + sum(t.shape[1] for t in self.taps)

    def materialize(self) -> Tensor:
        size = self.rgb.shape[-2:]
        return torch.cat([self.rgb, *(_upsample(t, size) for t in self.taps)], dim=1)

    def conv3x3(self, weight: Tensor, bias: Tensor | None) -> Tensor:
        """``F.conv2d(self.materialize(), weight, bias, padding=1)`` computed factorised."""
        height, width = self.rgb.shape[-2:]
        batch, out_ch = self.rgb.shape[0], weight.shape[0]
        parts = [self.rgb, *self.taps]
        splits = torch.split(weight, [p.shape[1] for p in parts], dim=1)
        # Taps with at least 1/8 of the pixels (full size, 1/2 scale) gain little from the
        # factorisation: upsample them and convolve them densely with the RGB.
        dense = [i for i, p in enumerate(parts)
                 if 8 * p.shape[-2] * p.shape[-1] >= height * width]
        out = F.conv2d(torch.cat([_upsample(parts[i], (height, width)) for i in dense], 1),
                       torch.cat([splits[i] for i in dense], 1), bias, padding=1)
        # shift_{dy,dx}(up(z)) = rows[dy] · z · cols[dx]ᵀ, summed over dy, dx and the taps:
        # the columns per tap (at its height), then the rows of every tap in one matmul over
        # the stacked (tap, dy, row) axis K, written once, channels last.
        coarse, rows = [], []
        for i, (part, w) in enumerate(zip(parts, splits, strict=True)):
            if i in dense:
                continue
            h, w_in = part.shape[-2:]
            # (out, c, 3, 3) -> (9·out, c, 1, 1): the nine 1×1 mixes, at the tap's size
            w9 = w.permute(2, 3, 0, 1).reshape(9 * out_ch, w.shape[1], 1, 1)
            z = F.conv2d(part, w9).view(batch, 3, 3, out_ch, h, w_in)
            cols = _shifted_upsampling(w_in, width, part)   # (3, W, w)
            zc = torch.einsum("byxchw,xvw->byhvc", z, cols)  # (B, 3, h, W, out)
            coarse.append(zc.reshape(batch, 3 * h, width * out_ch))
            rows.append(_shifted_upsampling(h, height, part).transpose(1, 2).reshape(3 * h, height))
        if coarse:  # (H, K) @ (B, K, W·out) -> (B, H, W, out)
            up = torch.matmul(torch.cat(rows).t(), torch.cat(coarse, 1))
            out = out + up.view(batch, height, width, out_ch).permute(0, 3, 1, 2)
        return out


def _upsample(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _shifted_upsampling(n_in: int, n_out: int, like: Tensor) -> Tensor:
    """(3, n_out, n_in): PyTorch's 1-D bilinear (align_corners=False) upsampling matrix,
    shifted by −1, 0, +1 output samples with zeros outside, as a zero-padded 3-tap conv
    sees it."""
    eye = torch.eye(n_in, dtype=like.dtype, device=like.device).view(1, n_in, n_in, 1)
    up = F.interpolate(eye, size=(n_out, 1), mode="bilinear", align_corners=False)
    mat = up.view(n_in, n_out).t()                       # (n_out, n_in)
    padded = F.pad(mat, [0, 0, 1, 1])                    # zero rows outside the image
    return torch.stack([padded[d:d + n_out] for d in range(3)])


class Hypercolumn(nn.Module):
    """RGB (B,3,H,W) in [0,1] → the 1475-channel hypercolumn [RGB, five VGG taps].

    As the authors do, VGG sees the raw [0,1] RGB (no ImageNet normalisation) and no
    gradient flows through it. Taps are upsampled bilinearly with align_corners=False.
    ``lazy=True`` (the default) returns :class:`HypercolumnFeatures`, which the first YTMT
    block convolves without materialising the (B,1475,H,W) tensor; ``lazy=False`` returns
    that tensor.
    """

    def __init__(self, vgg: VGG19Features, lazy: bool = True) -> None:
        super().__init__()
        self.vgg = vgg
        self.lazy = lazy

    def forward(self, x: Tensor) -> HypercolumnFeatures | Tensor:
        with torch.no_grad():
            features = HypercolumnFeatures(x.detach(), self.vgg(x))
            return features if self.lazy else features.materialize()


def imagenet_normalize(x: Tensor) -> Tensor:
    """[0,1] RGB (B,3,H,W) → ImageNet-normalised, for the perceptual loss."""
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std
