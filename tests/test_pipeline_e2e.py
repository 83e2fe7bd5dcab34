"""End to end: `dvc repro` on a fresh copy of the repository, as the README's run command does.

1. The whole pipeline runs offline on the embedded default data; the registry has a champion.
2. A tiny benchmark set in the common layout appears under data/: `dvc repro` re-runs what
   reads it (evaluation, registration) and not training; the report names the set.
3. `ytmt separate --model models:/ytmt@champion` works from a fresh shell.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _copy_repo(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True, text=True).stdout.split()
    for rel in files:
        src = ROOT / rel
        if src.is_file() and not rel.startswith("tests/"):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    git = ["git", "-c", "user.email=ci@localhost", "-c", "user.name=ci"]
    subprocess.run([*git, "init", "-q"], cwd=dst, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dst, check=True)
    subprocess.run([*git, "commit", "-qm", "copy"], cwd=dst, check=True)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_ADDRESS"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def _repro(repo: Path) -> str:
    proc = subprocess.run([str(BIN / "dvc"), "repro"], cwd=repo, env=_env(), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-6000:]
    return proc.stdout


def _write_benchmark(folder: Path, n: int = 3) -> None:
    rng = np.random.default_rng(0)
    for sub in ("blended", "transmission_layer"):
        (folder / sub).mkdir(parents=True)
    for i in range(n):
        t = rng.uniform(0, 0.7, (40, 56, 3))
        r = rng.uniform(0, 0.3, (40, 56, 3))
        Image.fromarray((t * 255).astype(np.uint8)).save(folder / "transmission_layer" / f"{i}.png")
        Image.fromarray((np.clip(t + r, 0, 1) * 255).astype(np.uint8)).save(
            folder / "blended" / f"{i}.png")


def test_dvc_repro_end_to_end_then_new_benchmark_then_separate(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _copy_repo(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    # The stages' own tests cover the sweep and how well training learns (tests/sweep,
    # tests/train/test_learning.py); here every stage runs, on less data and fewer steps.
    params["tune"]["enabled"] = False
    params["synthesize"].update(train_mixtures=64, val_mixtures=8, test_mixtures=8)
    params["train"].update(epochs=2, max_steps_per_epoch=4)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    first = _repro(repo)
    for stage in ("scan", "fetch", "synthesize", "tune", "train", "evaluate", "register"):
        assert f"Running stage '{stage}'" in first, stage
    registry = json.loads((repo / "outputs" / "registry.json").read_text())
    assert "champion" in json.dumps(registry)
    report = (repo / "outputs" / "eval" / "report.md").read_text()
    assert "real20" in report and "absent" in report

    _write_benchmark(repo / "data" / "real20")
    second = _repro(repo)
    assert "Running stage 'evaluate'" in second
    assert "Running stage 'train'" not in second
    assert "Running stage 'synthesize'" not in second
    metrics = json.loads((repo / "outputs" / "metrics" / "evaluate.json").read_text())
    assert "real20" in json.dumps(metrics)

    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (50, 70, 3), dtype=np.uint8)
                    ).save(photo)
    fresh = {"PATH": f"{BIN}{os.pathsep}/usr/bin:/bin", "HOME": str(tmp_path)}
    out = tmp_path / "separated"
    proc = subprocess.run([str(BIN / "ytmt"), "separate", str(photo), "--model",
                           "models:/ytmt@champion", "--out", str(out)], cwd=repo, env=fresh,
                          text=True, capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for layer in ("T", "R"):
        with Image.open(out / f"photo_{layer}.png") as im:
            assert im.size == (70, 50)
