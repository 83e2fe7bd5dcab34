"""End to end: `dvc repro` on a fresh copy of the repository, as the README's run command does,
then what a DVC user does next, each step checking that only stale stages re-run.

1. The whole pipeline runs offline on the embedded default data: every stage, one train
   stage per run (variants × seeds); `dvc metrics show` reads on a 100-column terminal. The
   tune stage runs a real one-trial sweep (and the winner's seed replicate): the
   `train@ytmt-ucs` MLflow run carries best.yaml's weights, `train@unet-no-fi` (not searched
   for) params.yaml's (issue 26 §2).
2. Python writes bytecode into ytmt/ and a module no stage imports is edited: `dvc status`
   reports only the always-run `scan`, and `dvc repro` re-runs nothing else (issue 11 §1).
3. `dvc exp run -S 'train.seeds=[0,1]'` trains seed 1 alone, then evaluates and registers all
   four runs (§2); `dvc plots diff` between the commit and the experiment has each run's
   curves at both revisions, and the page renders without internet (§3).
4. Real20 is fetched by the scan stage from a local server (params data.download; the lock
   records it): only scan, evaluate and register re-run, and the report names the copy.
5. `ytmt separate --model models:/ytmt@champion` works from a fresh shell.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.data.conftest import Server
from tests.data.test_datasets import real20_420_zip

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GIT = ["git", "-c", "user.email=ci@localhost", "-c", "user.name=ci"]


def _copy_repo(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True, text=True).stdout.split()
    for rel in files:
        src = ROOT / rel
        if src.is_file() and not rel.startswith("tests/"):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    _git(dst, "init", "-q")
    _commit(dst, "copy")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=repo, check=True, capture_output=True,
                          text=True).stdout


def _commit(repo: Path, message: str) -> None:
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", message)


def _env(repo: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_ADDRESS"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    if env.get("PYTHONPATH"):  # a worktree's code: the copy's code instead
        env["PYTHONPATH"] = str(repo)
    return env


def _dvc(repo: Path, *args: str, timeout: int = 1500) -> str:
    proc = subprocess.run([str(BIN / "dvc"), *args], cwd=repo, env=_env(repo), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    assert proc.returncode == 0, f"dvc {' '.join(args)}:\n{proc.stdout[-6000:]}"
    return proc.stdout


def _ran(log: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", log))


def _small_params(repo: Path) -> None:
    """Every stage runs, on less data and fewer steps. The stages' own tests cover the sweep's
    scheduling and resume, Ray Train DDP and how well training learns (tests/sweep,
    tests/train); the training runs here are in-process (num_workers 0) to keep this test at
    a few minutes, and the sweep is one trial of one epoch (its trials follow train: 4 steps
    on one worker)."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["tune"].update(num_samples=1, epochs=1, grace_period=1)
    params["synthesize"].update(train_mixtures=64, val_mixtures=8, test_mixtures=8)
    params["train"].update(epochs=2, max_steps_per_epoch=4, num_workers=0)
    params["evaluate"].update(max_images=4, visual_cases=1)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _check_sweep_reached_training(repo: Path) -> None:
    """best.yaml holds the sweep's winner for the variant it searched; the train@ MLflow run
    of that variant carries its weights, the other variant's run params.yaml's; the sweep
    reports its trials' spread against the winner's over two seeds."""
    from mlflow import MlflowClient

    best = yaml.safe_load((repo / "outputs/tune/best.yaml").read_text())
    assert best["variants"] == ["ytmt-ucs"] and set(best["weights"]) == {"loss.exclusion"}
    own = yaml.safe_load((repo / "params.yaml").read_text())["loss"]["exclusion"]
    assert best["weights"]["loss.exclusion"] != own  # a sampled value, not params.yaml's
    c = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    runs = c.search_runs([c.get_experiment_by_name("ytmt-train").experiment_id])
    by_variant = {r.data.tags["variant"]: r for r in runs}
    assert set(by_variant) == {"ytmt-ucs", "unet-no-fi"}
    assert float(by_variant["ytmt-ucs"].data.params["loss.exclusion"]) == pytest.approx(
        best["weights"]["loss.exclusion"])
    assert float(by_variant["unet-no-fi"].data.params["loss.exclusion"]) == own
    spread = json.loads((repo / "outputs/tune/spread.json").read_text())
    assert set(spread["seed_values"]) == {"0", "1"} and spread["trial_spread"] == 0.0
    sweep = c.search_runs([c.get_experiment_by_name("ytmt-tune").experiment_id],
                          filter_string="tags.ytmt_role = 'sweep'")[0]
    assert sweep.data.metrics["seed_spread_val_psnr_t"] == pytest.approx(spread["seed_spread"])


def _touch_bytecode_and_an_unused_module(repo: Path) -> None:
    code = ("import importlib, pkgutil, ytmt\n"
            "for m in pkgutil.walk_packages(ytmt.__path__, 'ytmt.'):\n"
            "    importlib.import_module(m.name)\n")
    for cmd in (["-m", "compileall", "-q", "ytmt"], ["-c", code]):
        subprocess.run([sys.executable, *cmd], cwd=repo, env={**_env(repo),
                       "PYTHONPATH": str(repo)}, check=True, timeout=300)
    assert list((repo / "ytmt").rglob("*.pyc"))
    with open(repo / "ytmt" / "cli.py", "a") as f:  # imported by no stage (test_dvc_deps)
        f.write("# edited by the end-to-end test\n")


def test_dvc_repro_then_bytecode_then_new_seed_then_new_benchmark_then_separate(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _copy_repo(repo)
    _small_params(repo)
    _commit(repo, "small params")

    first = _dvc(repo, "repro")
    assert _ran(first) == {"scan", "fetch", "synthesize", "tune", "train@ytmt-ucs-0",
                           "train@unet-no-fi-0", "evaluate", "register"}
    table = _dvc(repo, "metrics", "show")
    assert "outputs/metrics/val/ytmt-ucs-seed0.json" in table
    assert "outputs/metrics/eval/synthetic/unet-no-fi-seed0.json" in table
    assert max(map(len, table.splitlines())) <= 100, table
    _check_sweep_reached_training(repo)
    _commit(repo, "pipeline results (dvc.lock)")  # what a DVC user commits

    _touch_bytecode_and_an_unused_module(repo)
    status = json.loads(_dvc(repo, "status", "--json"))
    # data.dvc tracks the team's real data, which a clone without `dvc pull` lacks
    assert set(status) - {"data.dvc"} == {"scan"}, status
    assert _ran(_dvc(repo, "repro")) == {"scan"}

    more = _dvc(repo, "exp", "run", "-S", "train.seeds=[0,1]")
    assert _ran(more) == {"scan", "train@ytmt-ucs-1", "train@unet-no-fi-1", "evaluate",
                          "register"}
    registry = json.loads((repo / "outputs" / "registry.json").read_text())
    assert len(registry["versions"]) == 4 and registry["champion"]["uri"] == \
        "models:/ytmt@champion"
    assert (repo / "outputs/metrics/eval/synthetic/ytmt-ucs-seed1.json").is_file()

    exp = _dvc(repo, "exp", "list", "--name-only").split()[0]
    diff = json.loads(_dvc(repo, "plots", "diff", "HEAD", exp, "--json"))
    assert not diff.get("errors"), diff["errors"]
    curve = diff["data"]["outputs/plots/val_psnr/ytmt-ucs-seed0.csv"][0]
    assert curve["revisions"] == ["HEAD", exp]
    assert curve["content"]["encoding"]["x"]["field"] == "epoch"
    assert {v["field"] for v in curve["content"]["data"]["values"]} == {"val_psnr_t",
                                                                         "val_psnr_t_input"}
    assert diff["data"]["outputs/plots/val_psnr/ytmt-ucs-seed1.csv"][0]["revisions"] == [exp]
    subprocess.run([sys.executable, "-m", "ytmt.offline_plots"], cwd=repo, env={
        **_env(repo), "PYTHONPATH": str(repo)}, check=True, timeout=120)
    _dvc(repo, "plots", "diff", "HEAD", exp, "-o", str(tmp_path / "plots"))
    page = (tmp_path / "plots" / "index.html").read_text()
    assert "vegaEmbed" in page and not re.search(r"<script[^>]+src=\"https?:", page)

    params = yaml.safe_load((repo / "params.yaml").read_text())
    with Server({"/real20_420.zip": real20_420_zip()}) as srv:
        params["data"]["download"].update(sets=["real20"], urls={"real20_420": srv.url},
                                          cache_dir=str(tmp_path / "cache"))
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        third = _dvc(repo, "repro")
    assert _ran(third) == {"scan", "evaluate", "register"}
    assert "real20_420" in (repo / "datasets.lock.json").read_text()
    assert (repo / "outputs/metrics/eval/real20/unet-no-fi-seed1.json").is_file()
    report = (repo / "outputs" / "eval" / "report.md").read_text()
    assert "real20" in report and "real20_420" in report

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
