import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from ytmt.archs.discriminator import Discriminator
from ytmt.config import LossConfig
from ytmt.losses import (
    PerceptualLoss,
    SeparationLoss,
    exclusion_loss,
    gradient_l1,
    reconstruction_loss,
    relativistic_d_loss,
    relativistic_g_loss,
)


def img(rows):
    return torch.tensor(rows, dtype=torch.float32).view(1, 1, len(rows), len(rows[0]))


def test_reconstruction_loss_on_hand_computed_values():
    t_hat, t = img([[0.5, 0.5], [0.5, 0.5]]), img([[0.0, 1.0], [0.0, 1.0]])
    r_hat, r = torch.full_like(t, 0.25), torch.zeros_like(t)
    mixture = torch.ones_like(t)
    # MSE_T = 0.25, MSE_R = 0.0625, L1(∇T̂,∇T) = 0 (along H) + 1 (along W), L1(T̂+R̂, I) = 0.25
    assert float(gradient_l1(t_hat, t)) == pytest.approx(1.0)
    loss = reconstruction_loss(t_hat, r_hat, t, r, mixture, LossConfig())
    assert float(loss) == pytest.approx(0.3 * 0.25 + 0.9 * 0.0625 + 0.6 * 1.0 + 0.2 * 0.25)
    custom = LossConfig(rec_t_mse=1.0, rec_r_mse=0.0, rec_t_grad=0.0, rec_sum_l1=0.0)
    assert float(reconstruction_loss(t_hat, r_hat, t, r, mixture, custom)) == pytest.approx(0.25)


def reference_exclusion(t_hat, r_hat, levels):
    """Eq. 5 written out from design.md, statistics over everything it is given (one image:
    the authors' batch of 1): per scale and direction α = 2·mean|∇T̂| / (mean|∇R̂| + ε),
    ψ = (mean(s(∇T̂)²·s(α∇R̂)²) + ε)^¼ with s(x) = 2·sigmoid(x) − 1, bilinear ×½ between the
    scales; the mean over the scales, then over the two directions."""
    eps = 1e-6

    def s(x):
        return 2 * torch.sigmoid(x) - 1

    def psi(gt, gr):
        alpha = 2 * gt.abs().mean() / (gr.abs().mean() + eps)
        return ((s(gt) ** 2 * s(alpha * gr) ** 2).mean() + eps) ** 0.25

    along_h, along_w = [], []
    for _ in range(levels):
        along_h.append(psi(t_hat[..., 1:, :] - t_hat[..., :-1, :],
                           r_hat[..., 1:, :] - r_hat[..., :-1, :]))
        along_w.append(psi(t_hat[..., 1:] - t_hat[..., :-1], r_hat[..., 1:] - r_hat[..., :-1]))
        t_hat, r_hat = (F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
                        for x in (t_hat, r_hat))
    return (sum(along_h) / levels + sum(along_w) / levels) / 2


def test_exclusion_single_scale_matches_the_formula():
    t_hat = img([[0.0, 0.2, 0.6], [0.1, 0.1, 0.1], [0.3, 0.0, 0.9]])
    r_hat = img([[0.5, 0.4, 0.1], [0.2, 0.8, 0.3], [0.0, 0.1, 0.2]])
    expected = reference_exclusion(t_hat, r_hat, levels=1)
    assert float(exclusion_loss(t_hat, r_hat, levels=1)) == pytest.approx(float(expected), rel=1e-5)


def test_exclusion_three_scales_match_the_written_out_formula():
    """Three scales against :func:`reference_exclusion` (independent of the library's own
    single-scale code): per image, and pooled over a batch as the authors' code does."""
    g = torch.Generator().manual_seed(0)
    t_hat, r_hat = torch.rand(2, 3, 20, 24, generator=g), torch.rand(2, 3, 20, 24, generator=g)
    r_hat[1] *= 0.2  # a different gradient scale: per-image α differs from the pooled one
    for i in range(2):
        one = slice(i, i + 1)
        assert float(exclusion_loss(t_hat[one], r_hat[one], 3)) == pytest.approx(
            float(reference_exclusion(t_hat[one], r_hat[one], 3)), rel=1e-5)
    per_image = sum(reference_exclusion(t_hat[i:i + 1], r_hat[i:i + 1], 3) for i in range(2)) / 2
    assert float(exclusion_loss(t_hat, r_hat, 3)) == pytest.approx(float(per_image), rel=1e-5)
    assert float(exclusion_loss(t_hat, r_hat, 3, per_sample=False)) == pytest.approx(
        float(reference_exclusion(t_hat, r_hat, 3)), rel=1e-5)
    # the scales matter: three scales are another number than one
    assert abs(float(reference_exclusion(t_hat, r_hat, 1))
               - float(reference_exclusion(t_hat, r_hat, 3))) > 1e-3


def test_exclusion_is_low_for_layers_with_disjoint_edges():
    left = torch.zeros(1, 1, 16, 16)
    left[..., :8, 4] = 1.0      # a vertical edge in the top half
    right = torch.zeros(1, 1, 16, 16)
    right[..., 8:, 12] = 1.0    # another in the bottom half
    overlapping = exclusion_loss(left, left.clone(), levels=1)
    disjoint = exclusion_loss(left, right, levels=1)
    # disjoint edges reach the formula's floor, (0 + ε)^(1/4)
    assert float(disjoint) == pytest.approx(1e-6 ** 0.25, rel=1e-4)
    assert float(overlapping) > 5 * float(disjoint)


def test_relativistic_gan_losses_on_hand_computed_logits():
    d_real, d_fake = torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [2.0]])
    def softplus(x):
        return math.log1p(math.exp(x))

    # batch: real − mean(fake) = [0, 2] labelled 1; fake − mean(real) = [−2, 0] labelled 0
    expected_d = 0.5 * ((softplus(0) + softplus(-2)) / 2 + (softplus(-2) + softplus(0)) / 2)
    expected_g = 0.5 * ((softplus(0) + softplus(2)) / 2 + (softplus(2) + softplus(0)) / 2)
    assert float(relativistic_d_loss(d_real, d_fake, per_sample=False)) == pytest.approx(
        expected_d, rel=1e-6)
    assert float(relativistic_g_loss(d_real, d_fake, per_sample=False)) == pytest.approx(
        expected_g, rel=1e-6)
    # per sample (the authors' batch of 1): real_i − fake_i = [1, 1] labelled 1, and
    # fake_i − real_i = [−1, −1] labelled 0
    assert float(relativistic_d_loss(d_real, d_fake)) == pytest.approx(softplus(-1), rel=1e-6)
    assert float(relativistic_g_loss(d_real, d_fake)) == pytest.approx(softplus(1), rel=1e-6)


def test_per_sample_statistics_are_the_mean_of_batch_one_losses():
    """``batch_statistics: sample`` equals the authors' loss at batch 1 averaged over the
    images, whatever the batch; so splitting a batch over DDP workers keeps the loss."""
    g = torch.Generator().manual_seed(0)
    t_hat, r_hat = torch.rand(4, 3, 16, 16, generator=g), torch.rand(4, 3, 16, 16, generator=g)
    r_hat[2:] *= 0.1  # images with very different gradient scales: α differs per image
    singles = [exclusion_loss(t_hat[i:i + 1], r_hat[i:i + 1], 3) for i in range(4)]
    whole = exclusion_loss(t_hat, r_hat, 3)
    assert float(whole) == pytest.approx(float(sum(singles) / 4), rel=1e-5)
    halves = (exclusion_loss(t_hat[:2], r_hat[:2], 3) + exclusion_loss(t_hat[2:], r_hat[2:], 3))
    assert float(whole) == pytest.approx(float(halves / 2), rel=1e-5)
    # the authors' batch pooling is another objective once the batch holds several images
    pooled = exclusion_loss(t_hat, r_hat, 3, per_sample=False)
    assert abs(float(pooled) - float(whole)) > 1e-3
    assert float(exclusion_loss(t_hat[:1], r_hat[:1], 3, per_sample=False)) == pytest.approx(
        float(singles[0]), rel=1e-6)
    d_real, d_fake = torch.randn(4, 1, 1, 1, generator=g), torch.randn(4, 1, 1, 1, generator=g)
    per_image = [relativistic_g_loss(d_real[i:i + 1], d_fake[i:i + 1]) for i in range(4)]
    assert float(relativistic_g_loss(d_real, d_fake)) == pytest.approx(
        float(sum(per_image) / 4), rel=1e-6)


def test_perceptual_loss_matches_direct_feature_l1(random_vgg):
    from ytmt.archs.vgg import imagenet_normalize

    weights = (0.1, 0.2, 0.3, 0.4, 0.5)
    pred = torch.rand(1, 3, 32, 32, requires_grad=True)
    target = torch.rand(1, 3, 32, 32)
    (loss,) = PerceptualLoss(random_vgg, weights)([pred], [target])
    fp, ft = random_vgg(imagenet_normalize(pred)), random_vgg(imagenet_normalize(target))
    direct = sum(w * F.l1_loss(a, b) for w, a, b in zip(weights, fp, ft, strict=True))
    assert float(loss.detach()) == pytest.approx(float(direct.detach()), rel=1e-5)
    loss.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    (same,) = PerceptualLoss(random_vgg, weights)([target], [target])
    assert float(same) == 0.0


def reference_perceptual(vgg, pred, target):
    """The authors' VGG loss written out: ImageNet-normalised inputs, the five taps' mean
    absolute differences weighted 1/2.6, 1/4.8, 1/3.7, 1/5.6, 10/1.5 (design.md)."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    weights = (1 / 2.6, 1 / 4.8, 1 / 3.7, 1 / 5.6, 10 / 1.5)
    taps = zip(vgg((pred - mean) / std), vgg((target - mean) / std), strict=True)
    return sum(w * (a - b).abs().mean() for w, (a, b) in zip(weights, taps, strict=True))


def test_separation_loss_weights_every_term_from_config(random_vgg):
    x = [torch.rand(2, 3, 32, 32) for _ in range(5)]
    disc = Discriminator(width=8)
    base = SeparationLoss(LossConfig(), random_vgg)(*x, discriminator=disc)
    assert set(base) == {"rec", "perceptual", "exclusion", "adversarial", "total"}
    cfg = LossConfig()
    expected = (base["rec"] + cfg.perceptual * base["perceptual"]
                + cfg.exclusion * base["exclusion"] + cfg.adversarial * base["adversarial"])
    assert float(base["total"]) == pytest.approx(float(expected), rel=1e-6)
    doubled = SeparationLoss(dataclasses.replace(cfg, exclusion=2.0), random_vgg)(*x, disc)
    assert float(doubled["total"] - base["total"]) == pytest.approx(float(base["exclusion"]),
                                                                     rel=1e-4)
    t_hat, r_hat, t, r = x[:4]
    on_t, on_r = (reference_perceptual(random_vgg, a, b) for a, b in ((t_hat, t), (r_hat, r)))
    assert float(base["perceptual"]) == pytest.approx(float(on_t + on_r), rel=1e-5)  # Eq. 4
    t_only = SeparationLoss(dataclasses.replace(cfg, perceptual_on_reflection=False),
                            random_vgg)(*x, disc)
    assert float(t_only["perceptual"]) == pytest.approx(float(on_t), rel=1e-5)
    pooled = SeparationLoss(dataclasses.replace(cfg, batch_statistics="batch"),
                            random_vgg)(*x, disc)
    assert float(pooled["rec"]) == float(base["rec"])
    assert float(pooled["exclusion"]) != float(base["exclusion"])


def test_zero_weights_skip_terms_and_no_vgg_is_needed():
    cfg = LossConfig(perceptual=0.0, exclusion=0.0, adversarial=0.0)
    x = [torch.rand(1, 3, 16, 16) for _ in range(5)]
    terms = SeparationLoss(cfg, vgg=None)(*x)
    assert float(terms["total"]) == pytest.approx(float(terms["rec"]))
    with pytest.raises(ValueError, match="needs a VGG19Features"):
        SeparationLoss(LossConfig(), vgg=None)


def test_discriminator_outputs_one_logit_per_image_and_trains():
    disc = Discriminator(width=8)
    real, fake = torch.rand(3, 3, 64, 64), torch.rand(3, 3, 64, 64)
    assert disc(real).shape == (3, 1, 1, 1)
    loss = SeparationLoss(LossConfig(perceptual=0.0), None).discriminator_loss(
        disc, fake, real)
    loss.backward()
    assert all(p.grad is not None for p in disc.parameters())
    assert sum(p.numel() for p in Discriminator(width=64).parameters()) == 9_937_089
