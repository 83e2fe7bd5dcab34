"""Issue 11 §5: what the default recipe of params.yaml does to held-out photos.

params.yaml is read as shipped (data amount, loss weights, learning rate and schedule, crop,
batch, epochs, photos and their val/test split, seed; VGG-19 random as on a fresh clone) and
run at small scale only in how it runs (:data:`SCALE`): one training run, in this process on
one thread (no Ray, no sweep, no MLflow server), a few validation mixtures. ytmt-ucs is
trained on the embedded scikit-image photos and scored on the whole synthetic **test** split
(photos that neither training nor validation saw), paper protocol (ytmt.metrics.psnr_ssim).
Two runs (run seeds 0 and 1, side by side in two processes) are trained: each must beat the
identity baseline (the mixture taken as T̂) in PSNR, and their mean T̂ SSIM the input's.

The runs train at the recipe's ``train.precision: auto``, which each run's MLflow record must
show resolved as :func:`ytmt.precision.resolve_precision` resolves it here: bf16 on a CPU with
native bf16 (AVX-512 BF16 or AMX, as the hosts the numbers below come from), fp32 elsewhere.
So on bf16 hosts these are the suite's bf16 learning runs, and its fp32 ones elsewhere.

Measured (bench/results/recipe_cpu2.txt): at full scale (two Ray workers) over run seeds 0-3
test T̂ scores 18.47 ± 0.24 dB / 0.7935 ± 0.0035 against the input's 17.30 / 0.7862, above
it with every seed. This test's setting scores 0.7872, 0.7927, 0.7965, 0.7922 with run
seeds 0-3 in channels-last, params.yaml's layout since 2026-12-08 (+0.0038 over the input for
the mean of seeds 0 and 1); in NCHW it scored 0.7930, 0.7943, 0.7967, 0.7878 (+0.0075), the
same four-seed mean within 0.001 (bench/results/train_recipe_cpu2_amx.txt). The mean of two
seeds, not one run, is asserted because a single run's margin is within reach of the
seed-to-seed spread (+0.0010 with seed 0 in channels-last, +0.0016 with seed 3 in NCHW), and
another host's bf16 kernels can move a run as a seed does (an earlier recipe scored 0.669 on
the AMD host and 0.640 on the AMX one at the same seed). Half
the training mixtures (128) is not enough: +0.0025 and -0.0007 with seeds 0 and 1.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

#: the default recipe at small scale: in-process training on one thread (no Ray start-up;
#: two threads of one process stall when the CPU is shared) and 4 validation mixtures;
#: everything else (photos, split, data amount, crop, epochs, schedule, loss weights) is
#: params.yaml's
SCALE = {
    "synthesize.val_mixtures": 4,
    "synthesize.workers": 1,
    "train.num_workers": 0,
    "train.torch_threads": 1,
    "train.log_every_steps": 1000,
    "train.sample_every": 1000,
    "model.vgg_weights": "random",
}
#: the run seeds trained side by side (one thread each)
RUN_SEEDS = (0, 1)
#: validation PSNR of T̂ over the input's (the default run measured +3.3 dB)
MARGIN_DB = 1.0


def small_default_params(tmp_path: Path):
    """params.yaml scaled by :data:`SCALE`, its two workers'
    global batch in one process (the default run's steps)."""
    from ytmt.params import parse_params

    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["train"]["batch_size"] *= max(1, data["train"]["num_workers"])
    scale = {**SCALE, "train.storage_path": str(tmp_path / "ray_results"),
             "train.tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    for key, value in scale.items():
        section, name = key.split(".")
        data[section][name] = value
    return parse_params(data, "params.yaml at small scale")


def score_test_split(model, shards: Path) -> dict[str, float]:
    """Mean paper-protocol PSNR/SSIM of T̂ and of the input on the test split, scored by the
    evaluate stage's own per-image scoring (ytmt.metrics.score_images)."""
    from ytmt.evaluation.evaluate import iter_synthetic
    from ytmt.inference import separate
    from ytmt.metrics import score_images

    keys = {"psnr_t": "psnr_t", "ssim_t": "ssim_t", "psnr_in": "psnr_t_input",
            "ssim_in": "ssim_t_input"}
    rows = []
    for s in iter_synthetic(shards, "test"):
        t_hat, r_hat = separate(model, s.mixture, tile=None)
        scores = score_images(t_hat, r_hat, s.mixture, s.transmission, s.reflection,
                              protocols=("paper",))
        rows.append([scores[k] for k in keys.values()])
    return {**dict(zip(keys, np.mean(rows, axis=0), strict=True)), "images": len(rows)}


def train_and_score(tmp_path: Path, shards: Path, seed: int) -> dict[str, float | str]:
    """Train ytmt-ucs with run seed ``seed`` under ``tmp_path`` (its own MLflow store) and
    score it on the test split; runs in a child process."""
    from mlflow import MlflowClient

    from ytmt.checkpoint import model_from_checkpoint
    from ytmt.train.trainer import train_variant

    params = small_default_params(tmp_path)
    info = train_variant(params, "ytmt-ucs", shards, tmp_path / "model", seed=seed)
    assert info.metrics["epoch"] == params.train.epochs
    logged = MlflowClient(params.train.tracking_uri).get_run(info.mlflow_run_id).data.params
    return {**score_test_split(model_from_checkpoint(info.model_path), shards),
            "val_psnr_t": info.metrics["val_psnr_t"],
            "val_psnr_in": info.metrics["val_psnr_t_input"],
            "precision": logged["train.precision"], "precision_used": logged["precision_used"]}


@pytest.fixture(scope="module")
def small_default(tmp_path_factory):
    """{run seed: test scores of ytmt-ucs trained by the small-scale default recipe}."""
    from ytmt.data.sources import fetch_images
    from ytmt.data.synthesis import synthesize_shards

    tmp = tmp_path_factory.mktemp("recipe")
    params = small_default_params(tmp)
    fetch_images(params.fetch, tmp / "images")
    synthesize_shards(tmp / "images", tmp / "shards", params.synthesize, params.seed)
    runs, spawn = {}, multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(len(RUN_SEEDS), mp_context=spawn) as pool:
        for seed in RUN_SEEDS:
            (tmp / f"seed{seed}").mkdir()
            runs[seed] = pool.submit(train_and_score, tmp / f"seed{seed}", tmp / "shards", seed)
        scores = {seed: run.result() for seed, run in runs.items()}
    for seed, s in scores.items():
        assert s["images"] == params.synthesize.test_mixtures
        print(f"test split, small scale, run seed {seed} ({s['precision_used']}): T̂ "
              f"{s['psnr_t']:.2f} dB / {s['ssim_t']:.4f}, input {s['psnr_in']:.2f} / "
              f"{s['ssim_in']:.4f}")
    return scores


@pytest.mark.slow
def test_default_recipe_trains_at_the_precision_auto_resolves_to_here(small_default):
    """bf16 where this CPU computes it natively, fp32 elsewhere: the margins below hold for
    the precision a default run on this host uses."""
    from ytmt.precision import resolve_precision

    expected = resolve_precision("auto", "cpu")
    for seed, scores in small_default.items():
        assert (scores["precision"], scores["precision_used"]) == ("auto", expected), seed


@pytest.mark.slow
def test_default_recipe_beats_the_identity_baseline_on_validation_by_a_margin(small_default):
    """The loop's own validation (fp32 metrics of a model trained at the resolved precision,
    bf16 on this project's hosts) beats the input taken as T̂ by 1 dB with every seed."""
    for seed, scores in small_default.items():
        assert scores["val_psnr_t"] > scores["val_psnr_in"] + MARGIN_DB, (seed, scores)


@pytest.mark.slow
def test_default_recipe_beats_the_identity_baseline_in_psnr_on_test_photos(small_default):
    for seed, scores in small_default.items():
        assert scores["psnr_t"] > scores["psnr_in"], (seed, scores)


@pytest.mark.slow
def test_default_recipe_beats_the_identity_baseline_in_ssim_on_test_photos(small_default):
    ssim_t = np.mean([s["ssim_t"] for s in small_default.values()])
    ssim_in = np.mean([s["ssim_in"] for s in small_default.values()])
    assert ssim_t > ssim_in, small_default
