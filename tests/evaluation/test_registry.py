"""The register stage on a real SQLite MLflow store: versions, champion by validation metric,
idempotent re-runs, and `ytmt separate --model models:/...@champion` from a fresh process.

Everything here builds on the slow `evaluated` session fixture."""

import copy
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from PIL import Image

from ytmt.evaluation.config import RegisterConfig
from ytmt.evaluation.registry import NoChampion, register_models, write_registry

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def registered(evaluated, trained, tmp_path_factory):
    cfg = RegisterConfig(model_name="ytmt-test")
    result = register_models(evaluated["summary"], cfg, tracking_uri=trained["uri"])
    out = write_registry(result, tmp_path_factory.mktemp("reg") / "registry.json")
    return result, out, cfg


def test_mlflow_registry_lines_go_to_the_log_not_the_console(registered, evaluated, trained,
                                                             capfd, caplog, monkeypatch):
    """MLflow prints "Created version ..." to stderr itself; the stage keeps it in its log.
    MLflow's logger is set up as a stage sets it (ytmt.logs: no console handler of its own)."""
    mlflow_logger = logging.getLogger("mlflow")
    monkeypatch.setattr(mlflow_logger, "handlers", [])
    monkeypatch.setattr(mlflow_logger, "propagate", True)
    summary = copy.deepcopy(evaluated["summary"])
    cfg = RegisterConfig(model_name="ytmt-quiet")
    with caplog.at_level("INFO", logger="mlflow.registry"):
        register_models(summary, cfg, tracking_uri=trained["uri"])
    err = capfd.readouterr().err
    assert "Created version" not in err and "already exists" not in err, err
    lines = [r.getMessage() for r in caplog.records if r.name == "mlflow.registry"]
    assert sum(line.startswith("Created version") for line in lines) == 3, lines


def test_every_model_is_a_version_and_champion_is_best_validation(registered, trained):
    result, out, cfg = registered
    client = mlflow.MlflowClient(trained["uri"])
    versions = client.search_model_versions("name='ytmt-test'")
    assert len(versions) == 3
    champ = client.get_model_version_by_alias("ytmt-test", "champion")
    assert (champ.tags["variant"], champ.tags["seed"]) == ("ytmt-ucs", "1")  # val 22.0
    assert float(champ.tags["val_psnr_t"]) == 22.0
    assert "test_real20_psnr_t" in champ.tags  # informational, not used for the choice
    assert client.get_model_version_by_alias("ytmt-test", "unet-no-fi").tags["variant"] == \
        "unet-no-fi"
    saved = json.loads(out.read_text())
    assert saved["champion"]["uri"] == "models:/ytmt-test@champion"
    assert saved["champion"]["version"] == int(champ.version)


def test_champion_ignores_test_scores_and_rerun_is_idempotent(registered, evaluated, trained):
    result, _, cfg = registered
    summary = copy.deepcopy(evaluated["summary"])
    for m in summary["models"]:
        # make the no-FI model the best on every test set, and the worst on validation
        m["sets"]["real20"]["psnr_t"] = 99.0 if m["variant"] == "unet-no-fi" else 1.0
    again = register_models(summary, cfg, tracking_uri=trained["uri"])
    assert [v["version"] for v in again["versions"]] == [v["version"] for v in
                                                        result["versions"]]
    assert again["champion"]["version"] == result["champion"]["version"]
    # a better validation score moves the alias
    for m in summary["models"]:
        if m["variant"] == "unet-no-fi":
            m["val_metrics"]["val_psnr_t"] = 30.0
    moved = register_models(summary, cfg, tracking_uri=trained["uri"])
    client = mlflow.MlflowClient(trained["uri"])
    assert client.get_model_version_by_alias("ytmt-test", "champion").tags["variant"] == \
        "unet-no-fi"
    assert len(client.search_model_versions("name='ytmt-test'")) == 3
    register_models(evaluated["summary"], cfg, tracking_uri=trained["uri"])  # restore
    assert moved["champion"]["variant"] == "unet-no-fi"


def test_min_mode_and_missing_metric(evaluated, trained):
    low = register_models(evaluated["summary"], RegisterConfig(model_name="ytmt-min", mode="min"),
                          tracking_uri=trained["uri"])
    assert (low["champion"]["variant"], low["champion"]["seed"]) == ("ytmt-ucs", 0)  # val 20.0
    with pytest.raises(NoChampion, match="val_ssim_t"):
        register_models(evaluated["summary"],
                        RegisterConfig(model_name="ytmt-none", metric="val_ssim_t"),
                        tracking_uri=trained["uri"])


def test_separate_with_champion_from_a_fresh_shell(registered, trained, tmp_path):
    """A new process that only knows MLFLOW_TRACKING_URI pulls models:/...@champion."""
    Image.fromarray(np.full((24, 40, 3), 128, np.uint8)).save(tmp_path / "photo.jpg")
    env = {**os.environ, "MLFLOW_TRACKING_URI": trained["uri"]}
    ytmt_bin = Path(sys.executable).parent / "ytmt"
    proc = subprocess.run([str(ytmt_bin), "separate", str(tmp_path / "photo.jpg"), "--model",
                           "models:/ytmt-test@champion", "--out", str(tmp_path / "out")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    t_img = np.asarray(Image.open(tmp_path / "out" / "photo_T.png"))
    assert t_img.shape == (24, 40, 3)
    assert (tmp_path / "out" / "photo_R.png").is_file()


def test_champion_is_chosen_on_the_held_out_real_pairs_when_every_model_has_them(evaluated,
                                                                                  trained):
    summary = copy.deepcopy(evaluated["summary"])
    for m in summary["models"]:  # no-FI: worst on synthetic validation, best on real pairs
        real = 25.0 if m["variant"] == "unet-no-fi" else 15.0
        m["val_metrics"]["val_real_psnr_t"] = real + m["seed"]
    cfg = RegisterConfig(model_name="ytmt-real")
    chosen = register_models(summary, cfg, tracking_uri=trained["uri"])
    assert chosen["metric"] == "val_real_psnr_t"
    assert chosen["champion"]["variant"] == "unet-no-fi"
    # one model without real pairs: all are compared on the synthetic split
    del summary["models"][0]["val_metrics"]["val_real_psnr_t"]
    fallback = register_models(summary, cfg, tracking_uri=trained["uri"])
    assert fallback["metric"] == "val_psnr_t"
    assert fallback["champion"]["variant"] != "unet-no-fi"
    assert register_models(summary, RegisterConfig(model_name="ytmt-real", real_metric=None),
                           tracking_uri=trained["uri"])["metric"] == "val_psnr_t"
