"""dvc.yaml declares what each stage really uses, so only stale stages re-run (issue 11 §1):
the ytmt modules its script imports (no package folders, whose __pycache__ and unrelated
modules would make it stale), the params keys it reads, and bytecode ignored by DVC."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.dvc_deps import ROOT, module_closure, stage_scripts
from ytmt.train.config import NOT_RECIPE, TrainConfig

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _deps(stage: dict) -> list[str]:
    return [d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])]


def test_each_stage_depends_on_exactly_the_modules_its_script_imports():
    for name, script in stage_scripts().items():
        code = [d for d in _deps(STAGES[name]) if d.startswith(("ytmt", "pipelines"))]
        expected = [script, *module_closure(script)]
        assert sorted(code) == sorted(expected), (
            f"dvc.yaml stage {name}: deps should list exactly\n  - "
            + "\n  - ".join(expected) + "\n(`python -m tests.dvc_deps` prints every stage's)")


def test_no_stage_depends_on_a_package_folder():
    for name, stage in STAGES.items():
        for dep in _deps(stage):
            assert not (ROOT / dep).is_dir() or not dep.startswith(("ytmt", "pipelines")), \
                f"{name} depends on the folder {dep}: list the modules it imports instead"


def test_training_stages_read_only_the_recipe_keys_of_train():
    recipe = {f"train.{k}" for k in TrainConfig().recipe()}
    assert recipe.isdisjoint({f"train.{k}" for k in NOT_RECIPE})
    for name in ("tune", "train", "train2"):
        params = set(STAGES[name]["params"])
        assert "train" not in params, f"{name}: the whole train section makes every run stale"
        assert {p for p in params if p.startswith("train.")} == recipe, name


def test_some_module_is_used_by_no_stage():
    """The end-to-end test edits such a module and expects nothing to re-run."""
    used = {d for stage in STAGES.values() for d in _deps(stage)}
    unused = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "ytmt").rglob("*.py")
                    if p.relative_to(ROOT).as_posix() not in used)
    assert "ytmt/cli.py" in unused, unused


def test_dvc_ignores_bytecode_and_caches():
    targets = ["ytmt/__pycache__/losses.cpython-311.pyc", "ytmt/data/stray.pyc",
               "ytmt.egg-info/PKG-INFO", ".pytest_cache/v/x"]
    proc = subprocess.run([str(Path(sys.executable).parent / "dvc"), "check-ignore", *targets],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(proc.stdout.split()) == sorted(targets)
