"""Evaluation fanned out over Ray workers (evaluate.workers > 0) against the single-process
path: the same per-image scores, files and MLflow metrics; chunking and resource checks."""

import json
import time

import mlflow
import numpy as np
import pytest
import torch

from tests.evaluation.conftest import make_benchmarks
from ytmt.config import ConfigError, parse_section
from ytmt.evaluation.config import EvaluateConfig
from ytmt.evaluation.evaluate import Cases, EvalSet, ModelEntry, run_evaluation
from ytmt.evaluation.fanout import Chunk, check_fits, plan_chunks, worker_gpus


def _entry(variant):
    return ModelEntry(variant, 0, f"/m/{variant}.pt", None, None, {}, None)


def test_chunks_cover_every_model_and_image_in_order():
    sets = [EvalSet("synthetic", "synthetic", "s", True, 10), EvalSet("real20", "benchmark",
                                                                      "r", True, 3)]
    chunks = plan_chunks([_entry("a"), _entry("b")], sets, EvaluateConfig(workers=2))
    assert [c for c in chunks if c.entry == 0 and c.set_name == "synthetic"] == [
        Chunk(0, "synthetic", 0, 2), Chunk(0, "synthetic", 2, 4), Chunk(0, "synthetic", 4, 6),
        Chunk(0, "synthetic", 6, 8), Chunk(0, "synthetic", 8, None)]  # the last runs to the end
    assert [(c.start, c.stop) for c in chunks if c.entry == 1 and c.set_name == "real20"] == [
        (0, 1), (1, 2), (2, None)]
    assert [c.entry for c in chunks] == sorted(c.entry for c in chunks)
    capped = plan_chunks([_entry("a")], sets[:1], EvaluateConfig(workers=1, max_images=4))
    assert [(c.start, c.stop) for c in capped] == [(0, 1), (1, 2), (2, 3), (3, None)]


def test_cases_of_parts_give_the_best_and_worst_of_the_whole():
    """Ties included: scores on a coarse grid, so many images tie."""
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 40).astype(float)
    image = (np.zeros((2, 2, 3), np.float32),)
    whole = Cases(3)
    for i, s in enumerate(scores):
        whole.offer(s, str(i), image, i)
    joined = Cases(3)
    for start in range(0, 40, 7):
        part = Cases(3)
        for i in range(start, min(40, start + 7)):
            part.offer(scores[i], str(i), image, i)
        for case in part.candidates():
            joined.add(case)
    assert [c.index for c in joined.best] == [c.index for c in whole.best]
    assert [c.index for c in joined.worst] == [c.index for c in whole.worst]


def test_resource_requests_the_cluster_cannot_hold_are_refused():
    cfg = EvaluateConfig(workers=3, cpus_per_worker=1.0)
    with pytest.raises(ConfigError, match=r"evaluate.workers × evaluate.cpus_per_worker = 3 "):
        check_fits(cfg, 0.0, {"CPU": 2.0})
    check_fits(cfg, 0.0, {"CPU": 3.0})
    with pytest.raises(ConfigError, match="gpus_per_worker = 3 GPUs: the Ray cluster has 2"):
        check_fits(cfg, 1.0, {"CPU": 8.0, "GPU": 2.0})
    assert worker_gpus(cfg, {"CPU": 2.0}) == 0.0
    assert worker_gpus(cfg, {"CPU": 2.0, "GPU": 4.0}) == 1.0
    assert worker_gpus(EvaluateConfig(use_gpu=False), {"GPU": 4.0}) == 0.0
    with pytest.raises(ConfigError, match="use_gpu = true: the Ray cluster has no GPU"):
        worker_gpus(EvaluateConfig(use_gpu=True), {"CPU": 2.0})
    with pytest.raises(ConfigError, match="leave device: cpu"):
        parse_section(EvaluateConfig, {"workers": 2, "device": "cuda"}, "evaluate")


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_fanout_gives_the_single_process_scores_files_and_mlflow_metrics(trained, tiny_shards,
                                                                         tmp_path):
    """Three models × (3 synthetic + 3 Real20 + 2 Objects images) over two Ray workers, one
    torch thread each like the single-process run, fp32: every per-image score, CSV,
    grid, report and dvc-metrics row is byte for byte the single-process one, and the
    metrics it logs into each training run are the single-process means."""
    manifest = make_benchmarks(tmp_path)
    base = dict(tracking_uri=trained["uri"], visual_cases=2, torch_threads=1)
    threads = torch.get_num_threads()
    try:
        serial = run_evaluation(EvaluateConfig(**base), trained["models"], tiny_shards,
                                manifest, tmp_path / "serial", tmp_path / "m_serial",
                                log_mlflow=False)
    finally:
        torch.set_num_threads(threads)
    started = int(time.time() * 1000)
    fanned = run_evaluation(EvaluateConfig(**base, workers=2, cpus_per_worker=0.5),
                            trained["models"], tiny_shards, manifest, tmp_path / "fanout",
                            tmp_path / "m_fanout")
    assert torch.get_num_threads() == threads  # the workers set theirs, not this process
    assert serial["precision"] == fanned["precision"] == "fp32"
    assert {k: v for k, v in fanned.items() if k != "tracking_uri"} == \
        {k: v for k, v in serial.items() if k != "tracking_uri"}
    files = _files(tmp_path / "fanout")
    assert files.keys() == _files(tmp_path / "serial").keys()
    serial_files = _files(tmp_path / "serial")
    different = [name for name, data in files.items() if name != "summary.json"
                 and data != serial_files[name]]
    assert different == []
    assert len(files["per_image.csv"].splitlines()) == 1 + 3 * (3 + 3 + 2)
    assert _files(tmp_path / "m_fanout") == _files(tmp_path / "m_serial")
    summary = json.loads(files["summary.json"])
    assert summary["tracking_uri"] == trained["uri"]
    client = mlflow.MlflowClient(trained["uri"])
    for model in serial["models"]:
        for set_name, means in model["sets"].items():
            for metric in ("psnr_t", "ssim_r_strict"):
                history = client.get_metric_history(model["run_id"],
                                                    f"test_{set_name}_{metric}")
                logged = [h.value for h in history if h.timestamp >= started]
                assert logged == [pytest.approx(means[metric], rel=1e-12)]
