"""The paper-scale `dvc exp run` commands that README.md and docs/training.md give are read
the way DVC reads them (dvc.utils.hydra.apply_overrides on a copy of params.yaml), validated
by ytmt.params.load_params, and must set the paper's recipe (design.md §2): a typo or a
missing override in either document fails here, not hours into a GPU run."""

from __future__ import annotations

import itertools
import re
import shlex
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/training.md")


def paper_command(doc: str) -> list[str]:
    """The ``-S`` overrides of the document's `dvc exp run` block that sets ``model.width=64``."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / doc).read_text(), flags=re.S)
    commands = [b.replace("\\\n", " ") for b in blocks
                if "dvc exp run" in b and "model.width=64" in b]
    assert len(commands) == 1, f"{doc}: expected one paper-scale command, found {len(commands)}"
    words = shlex.split(commands[0].strip())
    return [value for flag, value in itertools.pairwise(words) if flag == "-S"]


@pytest.mark.parametrize("doc", DOCS)
def test_the_documented_paper_command_sets_the_papers_recipe(tmp_path, doc):
    from dvc.utils.hydra import apply_overrides

    from ytmt.params import load_params

    params_file = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params_file)
    apply_overrides(params_file, paper_command(doc))
    p = load_params(params_file)
    assert (p.model.width, p.model.vgg_weights) == (64, "imagenet")
    assert (p.train.epochs, p.train.lr, p.train.lr_milestones, p.train.lr_gamma) == (
        120, 1e-4, (60, 80, 100), 0.5)
    assert (p.train.crop, p.train.batch_size, p.train.gan, p.train.use_gpu) == (
        224, 1, True, True)
    assert (p.loss.perceptual, p.loss.exclusion, p.loss.rec_r_mse, p.loss.rec_t_grad) == (
        0.1, 1.0, 0.9, 0.6)
    assert not p.tune.enabled  # a sweep's pick would replace the paper's λ2
    assert (p.fetch.source, p.synthesize.scale_min, p.synthesize.scale_max) == (
        "voc2012", 256, 448)
