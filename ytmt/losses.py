"""The training objective (paper Eq. 3-7, design.md s2).

    L = L_rec + λ1·L_per + λ2·L_exc + λ3·L_adv
    L_rec = a·MSE(T̂,T) + b·MSE(R̂,R) + c·L1(∇T̂,∇T) + d·L1(T̂+R̂, I)

All images are (B,3,H,W) floats in [0,1]. Every weight comes from :class:`LossConfig`;
nothing here holds a bare multiplier of the recipe.

Where the paper and the authors' code differ, the paper is followed:
- the authors' code builds the reflection MSE term and then never uses it (their R loss is
  the T pixel loss object); here ``b·MSE(R̂, R)`` is applied as Eq. 3 says;
- the perceptual loss is applied to T and to R as Eq. 4 says
  (``perceptual_on_reflection: false`` gives the T-only variant).

Batch statistics. The exclusion loss (its normaliser α and the mean inside ψ) and the
relativistic GAN (the mean logit of the other side) take statistics of the images they see.
The authors train with batch size 1, so those statistics are per image; their code takes
them over the whole batch when the batch is larger. ``loss.batch_statistics: sample`` (the
default) computes them per image and averages the per-image losses, which is the authors'
objective at every batch size and makes the loss independent of how a global batch is split
over DDP workers; ``batch`` pools them over the (per-worker) batch like the authors' code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ytmt.archs.vgg import VGG19Features, imagenet_normalize
from ytmt.config import LossConfig

EPS = 1e-6


def gradients(x: Tensor) -> tuple[Tensor, Tensor]:
    """Forward differences of (B,C,H,W) along H and along W: (B,C,H−1,W), (B,C,H,W−1)."""
    return x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]


def gradient_l1(pred: Tensor, target: Tensor) -> Tensor:
    """``L1(∇pred, ∇target)``: mean absolute gradient difference, summed over both directions."""
    (py, px), (ty, tx) = gradients(pred), gradients(target)
    return F.l1_loss(py, ty) + F.l1_loss(px, tx)


def reconstruction_loss(t_hat: Tensor, r_hat: Tensor, t: Tensor, r: Tensor, mixture: Tensor,
                        cfg: LossConfig) -> Tensor:
    """Eq. 3: a·MSE(T̂,T) + b·MSE(R̂,R) + c·L1(∇T̂,∇T) + d·L1(T̂+R̂, I)."""
    return (cfg.rec_t_mse * F.mse_loss(t_hat, t)
            + cfg.rec_r_mse * F.mse_loss(r_hat, r)
            + cfg.rec_t_grad * gradient_l1(t_hat, t)
            + cfg.rec_sum_l1 * F.l1_loss(t_hat + r_hat, mixture))


def _psi(g_t: Tensor, g_r: Tensor, dims: tuple[int, ...]) -> Tensor:
    """One scale and direction of Eq. 5 with Zhang et al.'s normalisation; the means run
    over ``dims`` ((1,2,3): one ψ per image, shape (B,); (0,1,2,3): one for the batch)."""
    alpha = 2.0 * g_t.abs().mean(dims, keepdim=True) / (g_r.abs().mean(dims, keepdim=True)
                                                        + EPS)
    s_t = 2.0 * torch.sigmoid(g_t) - 1.0
    s_r = 2.0 * torch.sigmoid(alpha * g_r) - 1.0
    return ((s_t ** 2 * s_r ** 2).mean(dims) + EPS) ** 0.25


def exclusion_loss(t_hat: Tensor, r_hat: Tensor, levels: int = 3,
                   per_sample: bool = True) -> Tensor:
    """Gradient exclusion (Eq. 5): ψ per scale and direction, bilinear ×0.5 between scales,
    averaged over the scales, then over the two directions. ``per_sample``: α and ψ per
    image, then the mean over the batch; else pooled over the batch (module docstring)."""
    dims = (1, 2, 3) if per_sample else (0, 1, 2, 3)
    per_dir = [t_hat.new_zeros(()), t_hat.new_zeros(())]
    for level in range(levels):
        for i, (g_t, g_r) in enumerate(zip(gradients(t_hat), gradients(r_hat), strict=True)):
            per_dir[i] = per_dir[i] + _psi(g_t, g_r, dims)
        if level + 1 < levels:
            t_hat = F.interpolate(t_hat, scale_factor=0.5, mode="bilinear", align_corners=False)
            r_hat = F.interpolate(r_hat, scale_factor=0.5, mode="bilinear", align_corners=False)
    return ((per_dir[0] / levels + per_dir[1] / levels) / 2.0).mean()


class PerceptualLoss(nn.Module):
    """Eq. 4: Σ_i w_i·L1(φ_i(pred), φ_i(target)) over the five VGG-19 taps.

    Inputs are ImageNet-normalised. Predictions are batched through VGG in one pass (with
    gradients), targets in another (without), instead of one pass per image pair.
    """

    def __init__(self, vgg: VGG19Features, layer_weights: tuple[float, ...]) -> None:
        super().__init__()
        self.vgg = vgg
        self.layer_weights = tuple(layer_weights)

    def forward(self, preds: list[Tensor], targets: list[Tensor]) -> list[Tensor]:
        """One loss per (pred, target) pair."""
        n = len(preds)
        feats = self.vgg(imagenet_normalize(torch.cat(preds)))
        with torch.no_grad():
            tfeats = self.vgg(imagenet_normalize(torch.cat(targets)))
        losses = []
        for k in range(n):
            total = preds[0].new_zeros(())
            for w, f, tf in zip(self.layer_weights, feats, tfeats, strict=True):
                total = total + w * F.l1_loss(f.chunk(n)[k], tf.chunk(n)[k])
            losses.append(total)
        return losses


def _bce(logits: Tensor, target: float) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def _reference(logits: Tensor, per_sample: bool) -> Tensor:
    """What the other side's logits are compared with: each image's own (per sample, the
    authors' batch of 1) or the batch mean (RaGAN over a batch)."""
    return logits if per_sample else logits.mean(0, keepdim=True)


def relativistic_d_loss(d_real: Tensor, d_fake: Tensor, per_sample: bool = True) -> Tensor:
    """RaGAN discriminator loss on (B,...) logits: real should look more real than the
    (average) fake, and fake less real than the (average) real."""
    return 0.5 * (_bce(d_real - _reference(d_fake, per_sample), 1.0)
                  + _bce(d_fake - _reference(d_real, per_sample), 0.0))


def relativistic_g_loss(d_real: Tensor, d_fake: Tensor, per_sample: bool = True) -> Tensor:
    """RaGAN generator loss: the labels of :func:`relativistic_d_loss` swapped."""
    return 0.5 * (_bce(d_real - _reference(d_fake, per_sample), 0.0)
                  + _bce(d_fake - _reference(d_real, per_sample), 1.0))


class SeparationLoss(nn.Module):
    """The full generator objective; returns every term so each can be logged.

    ``terms = crit(t_hat, r_hat, t, r, mixture, discriminator)`` → dict of scalars with keys
    ``rec``, ``perceptual``, ``exclusion``, ``adversarial`` and the weighted ``total``.
    Terms whose weight is 0 are not computed (reported as 0).
    """

    def __init__(self, cfg: LossConfig, vgg: VGG19Features | None) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.perceptual > 0 and vgg is None:
            raise ValueError("loss.perceptual > 0 needs a VGG19Features")
        self.perceptual = (PerceptualLoss(vgg, cfg.perceptual_layer_weights)
                           if cfg.perceptual > 0 else None)

    def forward(self, t_hat: Tensor, r_hat: Tensor, t: Tensor, r: Tensor, mixture: Tensor,
                discriminator: nn.Module | None = None) -> dict[str, Tensor]:
        cfg = self.cfg
        zero = t_hat.new_zeros(())
        terms = {"rec": reconstruction_loss(t_hat, r_hat, t, r, mixture, cfg)}
        if self.perceptual is not None:
            if cfg.perceptual_on_reflection:
                terms["perceptual"] = sum(self.perceptual([t_hat, r_hat], [t, r]))
            else:
                terms["perceptual"] = self.perceptual([t_hat], [t])[0]
        else:
            terms["perceptual"] = zero
        per_sample = cfg.batch_statistics == "sample"
        terms["exclusion"] = (exclusion_loss(t_hat, r_hat, cfg.exclusion_levels, per_sample)
                              if cfg.exclusion > 0 else zero)
        if discriminator is not None and cfg.adversarial > 0:
            terms["adversarial"] = relativistic_g_loss(discriminator(t), discriminator(t_hat),
                                                       per_sample)
        else:
            terms["adversarial"] = zero
        terms["total"] = (terms["rec"] + cfg.perceptual * terms["perceptual"]
                          + cfg.exclusion * terms["exclusion"]
                          + cfg.adversarial * terms["adversarial"])
        return terms

    def discriminator_loss(self, discriminator: nn.Module, t_hat: Tensor, t: Tensor) -> Tensor:
        """RaGAN loss of the discriminator on real T vs (detached) T̂."""
        return relativistic_d_loss(discriminator(t), discriminator(t_hat.detach()),
                                   self.cfg.batch_statistics == "sample")
