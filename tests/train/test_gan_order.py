"""The step's order is the authors' (``optimize_parameters`` of their YTMTNetModel): the
generator's forward, the discriminator's update on that T̂ (detached), then the generator's
update, whose adversarial term goes through the discriminator as just updated."""

import copy

import torch

from ytmt.params import resolve_params
from ytmt.train.components import build_components
from ytmt.train.step import build_step, train_step

from .conftest import tiny_params


def test_the_discriminator_is_updated_first_on_this_generators_output():
    # a large learning rate, so that D's one update shows in the adversarial term
    params = resolve_params(tiny_params(train__gan=True, train__discriminator_width=4,
                                        train__lr=0.05))
    parts = build_components(params, "ytmt-ucs")
    step = build_step(parts, parts.model, params.train, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    t, r = torch.rand(2, 3, 32, 32, generator=g) * 0.6, torch.rand(2, 3, 32, 32, generator=g) * 0.4
    m = (t + r).clamp(0, 1)
    generator_before = copy.deepcopy(parts.model)
    disc_before = copy.deepcopy(parts.discriminator)
    terms = train_step(step, (m, t, r))
    crit = parts.criterion
    with torch.no_grad():
        t_hat, r_hat = generator_before(m)  # T̂ of this step's generator, before its update
        d_loss = crit.discriminator_loss(disc_before, t_hat, t)
        adv_updated_d = crit(t_hat, r_hat, t, r, m, parts.discriminator)["adversarial"]
        adv_old_d = crit(t_hat, r_hat, t, r, m, disc_before)["adversarial"]
    torch.testing.assert_close(terms["discriminator"].detach(), d_loss, rtol=1e-6, atol=1e-7)
    # D's update shows in the term, far above the tolerance of the equality below
    assert (adv_updated_d - adv_old_d).abs() > 1e-6
    torch.testing.assert_close(terms["adversarial"].detach(), adv_updated_d, rtol=1e-6,
                               atol=1e-7)
