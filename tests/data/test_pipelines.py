"""The scan, fetch and synthesize stage entry points, end to end on tiny data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from ytmt.data.config import DataConfig
from ytmt.data.manifest import scan, scan_set
from ytmt.data.reader import ShardDataset, check_shards

from .conftest import smooth_photo, write_photos

REPO = Path(__file__).resolve().parents[2]


def make_pairs(folder: Path, n: int, orphan: bool = False) -> None:
    rng = np.random.default_rng(0)
    for sub in ("blended", "transmission_layer"):
        (folder / sub).mkdir(parents=True)
    for i in range(n):
        t = smooth_photo(rng, 48, 40)
        Image.fromarray(t).save(folder / "transmission_layer" / f"{i}.png")
        Image.fromarray(np.minimum(t.astype(int) + 40, 255).astype(np.uint8)).save(
            folder / "blended" / f"{i}.png")
    if orphan:
        Image.fromarray(t).save(folder / "blended" / "orphan.png")


def test_scan_reports_present_absent_and_broken_sets(tmp_path):
    make_pairs(tmp_path / "data" / "real_train", 2)
    make_pairs(tmp_path / "data" / "real20", 3)
    make_pairs(tmp_path / "data" / "broken", 1, orphan=True)
    cfg = DataConfig(root=str(tmp_path / "data"), real_pairs="real_train",
                     benchmarks={"real20": "real20", "wild": "sir2/wild", "bad": "broken"})
    m = scan(cfg)
    assert m["real_pairs"]["present"] and m["real_pairs"]["count"] == 2
    real20 = m["benchmarks"]["real20"]
    assert real20["present"] and real20["count"] == 3 and len(real20["digest"]) == 64
    assert m["benchmarks"]["wild"] == {"path": str(tmp_path / "data" / "sir2" / "wild"),
                                       "present": False, "count": 0, "digest": None,
                                       "error": None}
    assert not m["benchmarks"]["bad"]["present"]
    assert "without a transmission_layer" in m["benchmarks"]["bad"]["error"]
    before = real20["digest"]
    Image.fromarray(np.zeros((48, 40, 3), np.uint8)).save(
        tmp_path / "data" / "real20" / "blended" / "0.png")
    assert scan_set(tmp_path / "data" / "real20")["digest"] != before


def run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(REPO / "pipelines" / script), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.slow
def test_scan_fetch_synthesize_stages(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    write_photos(tmp_path / "photos", 8)
    (tmp_path / "photos" / "broken.jpg").write_text("no image")
    make_pairs(tmp_path / "data" / "real_train", 2)
    params["fetch"].update(source="folder", folder=str(tmp_path / "photos"), min_side=16)
    params["synthesize"].update(size=32, scale_min=32, scale_max=40, train_mixtures=16,
                                val_mixtures=4, test_mixtures=4, chunk=8, workers=2)
    params["data"]["root"] = str(tmp_path / "data")
    params["train"]["crop"] = 24
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))

    run("scan_data.py", "--params", "params.yaml", "--out", "outputs/data_manifest.json",
        cwd=tmp_path)
    manifest = json.loads((tmp_path / "outputs" / "data_manifest.json").read_text())
    assert manifest["real_pairs"]["present"] and manifest["real_pairs"]["count"] == 2
    assert set(manifest["benchmarks"]) == set(params["data"]["benchmarks"])

    proc = run("fetch.py", "--params", "params.yaml", "--out", "outputs/images",
               "--metrics", "outputs/metrics/fetch.json", cwd=tmp_path)
    assert "8 images" in proc.stdout
    fetch = json.loads((tmp_path / "outputs" / "metrics" / "fetch.json").read_text())
    assert fetch["skipped_by_reason"] == {"not_an_image": 1}

    proc = run("synthesize.py", "--params", "params.yaml", "--images", "outputs/images",
               "--manifest", "outputs/data_manifest.json", "--out", "outputs/shards",
               "--metrics", "outputs/metrics/synthesize.json", cwd=tmp_path)
    assert "synthesize:" in proc.stderr  # progress line
    metrics = json.loads((tmp_path / "outputs" / "metrics" / "synthesize.json").read_text())
    assert metrics["splits"]["train"]["rows"] == 16
    # data.real_val 9: pair 0 (0 ≡ 0 mod 9) is held out for validation, pair 1 trains
    assert (metrics["real_pairs"]["train"], metrics["real_pairs"]["val"]) == (1, 1)
    assert metrics["workers"] == 2
    check_shards(tmp_path / "outputs" / "shards")
    ds = ShardDataset(tmp_path / "outputs" / "shards", "train", crop=24, augment=True,
                      real_share=0.5)
    assert 0 < sum(bool(s["is_real"]) for s in ds) < 16
