"""The evaluate stage on real (tiny) shards, benchmarks in the common layout and a real
SQLite MLflow store: per-image numbers, seeds, absent sets, report, MLflow logging.

Tests marked slow share one session fixture (three models logged to MLflow, one evaluation
run: about a minute on two busy cores)."""

import csv
import json

import mlflow
import numpy as np
import pytest

from tests.evaluation.conftest import TRAINED, make_benchmarks
from ytmt.checkpoint import model_from_checkpoint
from ytmt.config import ConfigError, parse_section
from ytmt.data.benchmarks import read_benchmark, read_pair
from ytmt.data.layout import find_pairs
from ytmt.evaluation.config import EvaluateConfig, RegisterConfig
from ytmt.evaluation.evaluate import discover_models
from ytmt.inference import separate
from ytmt.metrics import psnr_ssim


def test_benchmark_reader_aligns_and_uses_i_minus_t(tmp_path):
    make_benchmarks(tmp_path)
    real = list(read_benchmark(tmp_path / "data/real20"))
    assert [p.name for p in real] == ["0", "1", "2"]
    assert real[0].mixture.shape == real[0].transmission.shape == (32, 48, 3)  # 40x50 -> /16
    assert real[0].reflection_source == "I-T"
    np.testing.assert_allclose(real[0].reflection, real[0].mixture - real[0].transmission)
    objects = list(read_benchmark(tmp_path / "data/sir2/objects"))
    assert objects[0].reflection_source == "ground_truth"
    assert objects[0].reflection.shape == (32, 64, 3)
    raw = read_pair(find_pairs(tmp_path / "data/real20")[0], align=False)
    assert raw.mixture.shape == (40, 50, 3)


@pytest.mark.slow
def test_models_are_discovered_with_variant_seed_and_validation(trained):
    entries = discover_models(trained["models"])
    assert [(e.variant, e.seed) for e in entries] == [("unet-no-fi", 0), ("ytmt-ucs", 0),
                                                      ("ytmt-ucs", 1)]
    assert entries[2].val_metrics["val_psnr_t"] == 22.0
    assert all(e.run_id and e.model_uri.startswith("models:/") for e in entries)


def test_discovery_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the train stage"):
        discover_models(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no <variant>/seed<k>/model.pt"):
        discover_models(tmp_path / "empty")
    from ytmt.train.config import Run

    with pytest.raises(FileNotFoundError, match="run listed in params"):
        discover_models(tmp_path / "empty", [Run("ytmt-ucs", 3)])
    (tmp_path / "empty/ytmt-ucs/seed3").mkdir(parents=True)
    (tmp_path / "empty/ytmt-ucs/seed3/info.json").write_text('{"variant": "ytmt-ucs"}')
    with pytest.raises(ValueError, match="expected a mapping with variant, seed and"):
        discover_models(tmp_path / "empty", [Run("ytmt-ucs", 3)])


@pytest.mark.slow
def test_sets_present_absent_and_broken_are_reported(evaluated):
    sets = {s["name"]: s for s in evaluated["summary"]["sets"]}
    assert sets["synthetic"]["present"] and sets["synthetic"]["scored"] == 3
    assert sets["real20"]["present"] and sets["real20"]["scored"] == 3
    assert sets["objects"]["scored"] == 2
    assert not sets["wild"]["present"] and sets["wild"]["error"] is None
    assert not sets["nature"]["present"] and "transmission_layer" in sets["nature"]["error"]
    report = (evaluated["out"] / "report.md").read_text()
    wild_row = next(line for line in report.splitlines() if line.startswith("| wild"))
    assert "absent" in wild_row and "25.48 / 0.890" in wild_row  # paper's Table 1 beside it
    assert "nature** could not be read" in report


@pytest.mark.slow
def test_per_image_numbers_are_the_metrics_of_the_models_outputs(evaluated, trained):
    rows = list(csv.DictReader(open(evaluated["out"] / "per_image.csv")))
    assert len(rows) == len(TRAINED) * (3 + 3 + 2)
    row = next(r for r in rows if r["variant"] == "ytmt-ucs" and r["seed"] == "1"
               and r["set"] == "real20" and r["image"] == "1")
    assert row["reflection_source"] == "I-T"
    pair = read_pair(find_pairs(evaluated["root"] / "data/real20")[1])
    model = model_from_checkpoint(trained["models"] / "ytmt-ucs/seed1/model.pt")
    t_hat, r_hat = separate(model, pair.mixture, tile=None)
    for protocol, suffix in (("paper", ""), ("strict", "_strict")):
        psnr_t, ssim_t = psnr_ssim(t_hat, pair.transmission, protocol)
        psnr_r, _ = psnr_ssim(r_hat, pair.mixture - pair.transmission, protocol)
        assert float(row[f"psnr_t{suffix}"]) == pytest.approx(psnr_t, abs=1e-4)
        assert float(row[f"ssim_t{suffix}"]) == pytest.approx(ssim_t, abs=1e-4)
        assert float(row[f"psnr_r{suffix}"]) == pytest.approx(psnr_r, abs=1e-4)


@pytest.mark.slow
def test_seeds_give_mean_and_std(evaluated):
    summary = evaluated["summary"]
    per_model = {m["key"]: m["sets"] for m in summary["models"]}
    values = [per_model[f"ytmt-ucs/seed{s}"]["real20"]["psnr_t"] for s in (0, 1)]
    stats = summary["variants"]["ytmt-ucs"]["real20"]["psnr_t"]
    assert stats["n"] == 2
    assert stats["mean"] == pytest.approx(np.mean(values))
    assert stats["std"] == pytest.approx(np.std(values, ddof=1))
    rows = evaluated["root"] / "metrics/eval"  # one dvc-metrics row per run and present set
    assert sorted(p.relative_to(rows).as_posix() for p in rows.rglob("*.json")) == sorted(
        f"{s}/{v}-seed{k}.json" for s in ("synthetic", "real20", "objects")
        for v, k, _ in TRAINED)
    row = json.loads((rows / "real20/ytmt-ucs-seed1.json").read_text())
    assert row == {"psnr_t": pytest.approx(values[1], abs=1e-3),
                   "ssim_t": pytest.approx(per_model["ytmt-ucs/seed1"]["real20"]["ssim_t"],
                                           abs=1e-4),
                   "psnr_i": pytest.approx(per_model["ytmt-ucs/seed1"]["real20"]["psnr_t_input"],
                                            abs=1e-3),
                   "ssim_i": pytest.approx(per_model["ytmt-ucs/seed1"]["real20"]["ssim_t_input"],
                                            abs=1e-4)}
    report = (evaluated["out"] / "report.md").read_text()
    assert f"{stats['mean']:.2f} ± {stats['std']:.2f}" in report
    assert "| unet-no-fi | 20.57 |" in report  # Table 4 beside ours


@pytest.mark.slow
def test_results_are_logged_to_each_training_run(evaluated, trained):
    """Into each model's training run: the sets as test datasets, the means against the
    logged model and the set, best/worst grids as images at step = the training epochs, the
    per-model CSV and the report."""
    from ytmt.evaluation.mlflow_log import model_id

    assert evaluated["summary"]["tracking_uri"] == trained["uri"]  # the training store
    elsewhere = mlflow.MlflowClient(f"sqlite:///{evaluated['root'] / 'elsewhere.db'}")
    assert not elsewhere.search_runs(
        [e.experiment_id for e in elsewhere.search_experiments()])  # nothing logged there
    client = mlflow.MlflowClient(trained["uri"])
    for m in evaluated["summary"]["models"]:
        info = json.loads((trained["models"] / m["variant"] / f"seed{m['seed']}"
                           / "info.json").read_text())
        assert m["run_id"] == info["mlflow_run_id"]
        run = client.get_run(m["run_id"])
        assert run.data.metrics["test_real20_psnr_t"] == pytest.approx(
            m["sets"]["real20"]["psnr_t"])
        assert "test_objects_ssim_r_strict" in run.data.metrics
        inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
        assert set(inputs) == {"synthetic", "real20", "objects"}
        manifest = json.loads(evaluated["manifest"].read_text())
        assert inputs["real20"].dataset.digest == manifest["benchmarks"]["real20"]["digest"][:36]
        assert [t.value for t in inputs["real20"].tags] == ["test"]
        logged = client.get_logged_model(model_id(info["model_uri"]))
        on_model = {(x.key, x.dataset_name) for x in logged.metrics}
        assert ("test_real20_psnr_t", "real20") in on_model  # the model page shows them
        names = {a.path for a in client.list_artifacts(m["run_id"], "evaluation")}
        assert {"evaluation/report.md", f"evaluation/{m['variant']}_seed{m['seed']}.csv"} \
            <= names
        images = [a.path for a in client.list_artifacts(m["run_id"], "images")]
        assert any(p.startswith("images/test_real20_best+step+1+") for p in images), images
        assert any(p.startswith("images/test_synthetic_worst+step+1+") for p in images)
    assert not [p for p in evaluated["root"].iterdir() if "partial" in p.name]


def test_evaluation_follows_the_models_training_store():
    from ytmt.config import ConfigError
    from ytmt.evaluation.evaluate import ModelEntry, training_store

    def entry(seed, uri):
        return ModelEntry("ytmt-ucs", seed, f"/m{seed}", None, None, {}, None, tracking_uri=uri)

    assert training_store([entry(0, None)]) is None  # older info.json: the fallbacks apply
    assert training_store([entry(0, "http://a:5000"), entry(1, None)]) == "http://a:5000"
    with pytest.raises(ConfigError, match=r"2 tracking stores .*set evaluate.tracking_uri"):
        training_store([entry(0, "http://a:5000"), entry(1, "sqlite:///b.db")])


def test_cases_rank_by_paper_psnr_or_the_configured_protocol():
    from ytmt.evaluation.evaluate import ranking_metric

    assert ranking_metric(("paper", "strict")) == "psnr_t"
    assert ranking_metric(("strict",)) == "psnr_t_strict"


def test_config_errors():
    with pytest.raises(ConfigError, match="multiple of 16"):
        parse_section(EvaluateConfig, {"tile": 100}, "evaluate")
    with pytest.raises(ConfigError, match="protocols"):
        parse_section(EvaluateConfig, {"protocols": ["jpeg"]}, "evaluate")
    with pytest.raises(ConfigError, match="never by a test set"):
        parse_section(RegisterConfig, {"metric": "test_real20_psnr_t"}, "register")
    with pytest.raises(ConfigError, match="reserved"):
        parse_section(RegisterConfig, {"alias": "latest"}, "register")


def test_whole_image_scoring_turns_the_onednn_primitive_cache_off(monkeypatch):
    """Benchmark photos of many sizes would each leave their convolutions in oneDNN's cache
    (issue 13, scale: evaluate peak memory 1.4 -> 2.7 GiB over 60 sizes) while the evaluation
    runs, and only then: processes started afterwards keep it (training without it ran at
    half speed in the suite's spawned runs). A user's own setting wins, and tiled scoring
    (one tile shape) keeps the cache."""
    import os

    from ytmt.evaluation.evaluate import PRIMITIVE_CACHE_ENV, bound_primitive_cache

    monkeypatch.setenv(PRIMITIVE_CACHE_ENV, "unset by the test")
    monkeypatch.delenv(PRIMITIVE_CACHE_ENV)  # restored to the process's own value after
    with bound_primitive_cache(EvaluateConfig(tile=256)):
        assert PRIMITIVE_CACHE_ENV not in os.environ
    with bound_primitive_cache(EvaluateConfig()):
        assert os.environ[PRIMITIVE_CACHE_ENV] == "0"
    assert PRIMITIVE_CACHE_ENV not in os.environ
    with pytest.raises(RuntimeError), bound_primitive_cache(EvaluateConfig()):
        raise RuntimeError("an interrupted evaluation")
    assert PRIMITIVE_CACHE_ENV not in os.environ
    monkeypatch.setenv(PRIMITIVE_CACHE_ENV, "64")
    with bound_primitive_cache(EvaluateConfig()):
        assert os.environ[PRIMITIVE_CACHE_ENV] == "64"
    assert os.environ[PRIMITIVE_CACHE_ENV] == "64"


def test_evaluation_leaves_the_environment_as_it_found_it(evaluated):
    """After an in-process evaluation (whole images, CPU), no oneDNN setting of it is left
    in os.environ for processes started later."""
    assert evaluated["cfg"].tile == 0 and evaluated["cfg"].device == "cpu"
    assert evaluated["env_after"] == evaluated["env_before"]
