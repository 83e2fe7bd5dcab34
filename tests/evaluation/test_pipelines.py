"""The DVC stage scripts pipelines/evaluate.py and pipelines/register.py as DVC runs them
(subprocesses, a params.yaml), on the tiny trained models, shards and benchmarks."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.evaluation.conftest import make_benchmarks

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _run(script, *args, cwd):
    proc = subprocess.run([sys.executable, str(ROOT / "pipelines" / script), *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_evaluate_then_register_stages(trained, tiny_shards, tmp_path):
    manifest = make_benchmarks(tmp_path)
    params = tmp_path / "params.yaml"
    data = yaml.safe_load((ROOT / "params.yaml").read_text())  # a stage needs every key
    # the runs of params: ytmt-ucs seeds 0 and 1 (the unet-no-fi folder is not listed)
    data["train"].update(variants=["ytmt-ucs"], seeds=[0, 1])
    data["evaluate"].update(tracking_uri=trained["uri"], visual_cases=1, max_images=2)
    data["register"]["model_name"] = "ytmt-stage"
    params.write_text(yaml.safe_dump(data))
    out = _run("evaluate.py", "--params", params, "--models", trained["models"], "--shards",
               tiny_shards, "--manifest", manifest, "--out", tmp_path / "eval", "--metrics",
               tmp_path / "metrics/eval", cwd=tmp_path)
    assert "2 model(s) on synthetic, real20, objects; absent: wild, nature" in out
    assert (tmp_path / "metrics/eval/real20/ytmt-ucs-seed1.json").is_file()
    assert "real20" in (tmp_path / "eval/report.md").read_text()
    out = _run("register.py", "--params", params, "--models", trained["models"], "--eval",
               tmp_path / "eval", "--out", tmp_path / "registry.json", cwd=tmp_path)
    registry = json.loads((tmp_path / "registry.json").read_text())
    assert registry["champion"]["uri"] == "models:/ytmt-stage@champion"
    assert (registry["champion"]["variant"], registry["champion"]["seed"]) == ("ytmt-ucs", 1)
    assert "models:/ytmt-stage@champion = version" in out
