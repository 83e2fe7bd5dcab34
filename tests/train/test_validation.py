"""Validation and evaluation score through one function (ytmt.metrics.score_images): the same
model on the same images gives the same numbers under the same names (``val_`` + the
evaluation's), the identity baseline in PSNR and SSIM included."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from ytmt.config import parse_section
from ytmt.evaluation.config import EvaluateConfig
from ytmt.evaluation.evaluate import evaluate_model_on_set, plan_sets
from ytmt.params import resolve_params
from ytmt.train.components import build_components
from ytmt.train.loop import shard_dataset
from ytmt.train.validation import VAL_KEYS, validate

from .conftest import tiny_params


def test_validation_and_evaluation_give_the_same_numbers(shards):
    torch.manual_seed(0)
    model = build_components(resolve_params(tiny_params()), "ytmt-ucs").model.eval()
    loader = DataLoader(shard_dataset(str(shards), "test", None, False, 0, 0, 1), batch_size=1)
    sums, samples = validate(model, loader, torch.device("cpu"), keep_samples=2)
    n = sums.pop("n")
    validation = {k: v / n for k, v in sums.items()}

    cfg = parse_section(EvaluateConfig, {"tile": 0, "precision": "fp32", "visual_cases": 1},
                        "evaluate")
    (synthetic,) = plan_sets(cfg, shards, None)
    rows, _ = evaluate_model_on_set(model, synthetic, cfg)
    assert n == len(rows) == 4 and len(samples) == 2
    names = [k for k in rows[0] if k not in ("image", "reflection_source")]
    evaluation = {f"val_{k}": float(np.mean([r[k] for r in rows])) for k in names}

    assert list(evaluation) == list(VAL_KEYS)
    assert {"val_psnr_t_input", "val_ssim_t_input", "val_ssim_r_strict"} <= set(VAL_KEYS)
    for key in VAL_KEYS:
        assert validation[key] == pytest.approx(evaluation[key], abs=1e-4), key


def test_one_grid_for_validation_samples_and_evaluation_cases():
    """Float rows of different sizes (validation) and uint8 rows with labels (evaluation)."""
    import io

    from PIL import Image

    from ytmt.evaluation.evaluate import Case
    from ytmt.evaluation.outputs import case_grid_png
    from ytmt.grids import image_grid_png
    from ytmt.train.validation import SAMPLE_COLUMNS

    rng = np.random.default_rng(0)
    rows = [[rng.random((h, 24, 3)) for _ in SAMPLE_COLUMNS] for h in (16, 32)]
    grid = Image.open(io.BytesIO(image_grid_png(rows, SAMPLE_COLUMNS, "title")))
    assert grid.size == (5 * (24 + 4) + 4, 2 * 16 + (16 + 4) + (32 + 4) + 4)
    top_left = np.asarray(grid)[2 * 16 + 4, 4]
    np.testing.assert_array_equal(top_left, np.round(rows[0][0][0, 0] * 255))
    cases = [Case(20.0, "a", tuple((rng.random((16, 16, 3)) * 255).astype(np.uint8)
                                   for _ in range(4)))]
    grid = Image.open(io.BytesIO(case_grid_png(cases, "best")))
    assert grid.size == (4 * (16 + 4) + 4, 2 * 16 + 16 + 16 + 4 + 4)
    np.testing.assert_array_equal(np.asarray(grid)[3 * 16 + 4, 4], cases[0].images[0][0, 0])


def test_validation_scores_what_separate_returns_on_sizes_not_multiple_of_16(tmp_path):
    """40 px validation images (not a multiple of 16: the U-Net's four poolings pad them):
    validation's T̂ and R̂ are those of ytmt.inference.separate, which `ytmt separate` and
    the evaluation use, and so are its metrics."""
    from ytmt.inference import separate
    from ytmt.metrics import PROTOCOLS, score_images

    from .conftest import Pairs

    torch.manual_seed(0)
    model = build_components(resolve_params(tiny_params()), "ytmt-ucs").model.eval()
    pairs = Pairs("val", 2, 40, 0, 1, tmp_path)
    sums, samples = validate(model, DataLoader(pairs, batch_size=2), torch.device("cpu"),
                             keep_samples=2)
    assert sums.pop("n") == 2 and len(samples) == 2
    expected = dict.fromkeys(sums, 0.0)
    for m, t_hat, r_hat, t, r in samples:
        want_t, want_r = separate(model, m, tile=None, device="cpu")
        np.testing.assert_allclose(t_hat, want_t, atol=1e-5)
        np.testing.assert_allclose(r_hat, want_r, atol=1e-5)
        for key, value in score_images(want_t, want_r, m, t, r, PROTOCOLS).items():
            expected[f"val_{key}"] += value
    for key in VAL_KEYS:
        assert sums[key] == pytest.approx(expected[key], abs=1e-4), key
