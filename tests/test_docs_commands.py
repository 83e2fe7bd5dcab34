"""The paper recipe is one artifact, ``presets/paper.yaml``: applied the way DVC applies
``-S`` overrides (dvc.utils.hydra.apply_overrides on a copy of params.yaml) and validated by
ytmt.params.load_params, it must set every number of the paper's recipe (design.md §2, the
authors' train_sirs.py). The paper-scale command of each document must apply it (plus only
overrides that keep the recipe): a typo, a missing key or a hand-written list that drifts
from the paper fails here, not hours into a GPU run."""

from __future__ import annotations

import itertools
import re
import shlex
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRESET = "presets/paper.yaml"
APPLY = f"python -m ytmt.presets {PRESET}"
DOCS = ("README.md", "docs/training.md", "docs/data.md")


def assert_paper_recipe(p) -> None:
    """Every number of the paper's recipe in loaded params ``p``."""
    # data: VOC photos, the authors' synthesis geometry, an epoch of 3,821 VOC pairs + 89
    # real pairs, fresh mixtures every epoch, real pairs 30 % of the samples
    assert p.fetch.source == "voc2012"
    s = p.synthesize
    assert (s.size, s.scale_min, s.scale_max, s.kernel_size) == (224, 224, 448, 11)
    assert (s.sigma_min, s.sigma_max, s.gamma_min, s.gamma_max) == (2.0, 5.0, 1.3, 1.3)
    assert (s.train_mixtures, s.val_mixtures, s.test_mixtures) == (3910, 500, 500)
    assert (s.val_image_fraction, s.test_image_fraction) == (0.03, 0.03)
    assert (p.train.mixtures, p.train.real_share, p.data.real_val) == ("fresh", 0.3, 9)
    # model and losses (ImageNet VGG-19 hypercolumns and perceptual loss)
    assert (p.model.width, p.model.hypercolumn, p.model.vgg_weights) == (64, True, "imagenet")
    loss = p.loss
    assert (loss.rec_t_mse, loss.rec_r_mse, loss.rec_t_grad, loss.rec_sum_l1) == (
        0.3, 0.9, 0.6, 0.2)
    assert (loss.perceptual, loss.exclusion, loss.adversarial) == (0.1, 1.0, 0.01)
    assert not p.tune.enabled  # a sweep's pick would replace the paper's weights
    # schedule: Adam (0.9, 0.999) 1e-4, halved at 60, 80, 100, 120 epochs, batch 1, 224 crops
    t = p.train
    assert (t.epochs, t.lr, t.lr_milestones, t.lr_gamma, t.betas) == (
        120, 1e-4, (60, 80, 100), 0.5, (0.9, 0.999))
    assert (t.crop, t.batch_size * t.num_workers, t.gan, t.use_gpu) == (224, 1, True, True)
    # runs: Table 1/4's variants, two-stage runs from their stage 1, three seeds
    assert set(t.variants) == {"ytmt-ucs", "ytmt-uas", "unet-no-fi", "ytmt-ucs-relu-only"}
    assert {(r.variant, r.stage1) for r in t.two_stage} == {("ytmt-uct", "ytmt-ucs"),
                                                           ("ytmt-uat", "ytmt-uas")}
    assert t.seeds == (0, 1, 2)


def applied(tmp_path, overrides: list[str]):
    from dvc.utils.hydra import apply_overrides

    from ytmt.params import load_params

    params_file = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params_file)
    apply_overrides(params_file, overrides)
    return load_params(params_file)


def test_the_paper_preset_sets_every_number_of_the_paper(tmp_path):
    from ytmt.presets import load_preset

    assert_paper_recipe(applied(tmp_path, load_preset(ROOT / PRESET)))


def test_the_preset_command_applies_it_and_validates(tmp_path):
    from ytmt.params import load_params
    from ytmt.presets import apply_preset

    params_file = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params_file)
    apply_preset(ROOT / PRESET, params_file)
    assert_paper_recipe(load_params(params_file))
    bad = tmp_path / "bad.yaml"
    bad.write_text("overrides:\n  - train.epochs=-1\n")
    before = params_file.read_text()
    with pytest.raises(Exception, match="train.epochs"):
        apply_preset(bad, params_file)
    assert params_file.read_text() == before  # a preset that fails leaves the file as it was


def paper_command(doc: str) -> tuple[bool, list[str]]:
    """Whether the document's paper-scale `dvc exp run` block applies the preset first, and
    that command's ``-S`` overrides."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / doc).read_text(), flags=re.S)
    commands = [b.replace("\\\n", " ") for b in blocks
                if "dvc exp run" in b and (APPLY in b or "model.width=64" in b)]
    assert len(commands) == 1, f"{doc}: expected one paper-scale command, found {len(commands)}"
    lines = [line.split("#")[0].strip() for line in commands[0].splitlines()]
    run = [line for line in lines if line.startswith("dvc exp run")]
    assert len(run) == 1, f"{doc}: one `dvc exp run` in the paper-scale block"
    words = shlex.split(run[0])
    return APPLY in lines, [value for flag, value in itertools.pairwise(words) if flag == "-S"]


@pytest.mark.parametrize("doc", DOCS)
def test_the_documented_paper_command_applies_the_preset(tmp_path, doc):
    from ytmt.presets import load_preset

    uses_preset, extra = paper_command(doc)
    assert uses_preset, f"{doc}: the paper-scale block must run `{APPLY}`"
    assert_paper_recipe(applied(tmp_path, load_preset(ROOT / PRESET) + extra))
