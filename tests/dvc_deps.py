"""The ytmt modules a DVC stage imports, statically: every ``import`` in the stage script and,
transitively, in every ytmt module it reaches (imports inside functions included, so a lazy
import counts as used). ``ytmt/__init__.py`` exports its names lazily by module name strings,
which this walk deliberately does not follow: no stage uses them.

    python -m tests.dvc_deps            # print each stage's deps list for dvc.yaml
    python -m tests.dvc_deps --write    # rewrite those lists in dvc.yaml in place
"""

from __future__ import annotations

import ast
import shlex
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _module_file(name: str) -> Path | None:
    path = ROOT / Path(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def _imported(path: Path) -> set[str]:
    """Dotted names of every ytmt module (or attribute of one) imported in ``path``."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[:len(package) - node.level + 1], *filter(None, [base])])
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return {n for n in names if n.split(".")[0] == "ytmt"}


def module_closure(script: str | Path) -> list[str]:
    """Repo-relative paths of the ytmt modules ``script`` imports, directly or not (each
    package's ``__init__.py`` included, since importing a module imports its packages)."""
    seen: set[Path] = set()
    todo = [ROOT / script]
    while todo:
        for name in _imported(todo.pop()):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                found = _module_file(".".join(parts[:i]))
                if found is not None and found not in seen:
                    seen.add(found)
                    todo.append(found)
    return sorted(p.relative_to(ROOT).as_posix() for p in seen)


def stage_scripts(dvc_yaml: Path = ROOT / "dvc.yaml") -> dict[str, str]:
    """{stage name: the ``pipelines/*.py`` script its command runs}."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    out = {}
    for name, stage in stages.items():
        words = shlex.split(" ".join(stage["cmd"]) if isinstance(stage["cmd"], list)
                            else stage["cmd"])
        out[name] = next(w for w in words if w.startswith("pipelines/") and w.endswith(".py"))
    return out


def rewrite(dvc_yaml: Path = ROOT / "dvc.yaml") -> None:
    """Replace each stage's ``- ytmt/...py`` deps lines by its :func:`module_closure`, right
    after the ``- pipelines/<script>.py`` line; everything else is kept as written."""
    scripts = stage_scripts(dvc_yaml)
    out: list[str] = []
    stage = None
    for line in dvc_yaml.read_text().splitlines():
        if line.startswith("  ") and not line.startswith("   ") and line.rstrip().endswith(":"):
            stage = line.strip()[:-1]
        item = line.strip()[2:] if line.strip().startswith("- ") else None
        if item and item.startswith("ytmt/") and item.endswith(".py"):
            continue
        out.append(line)
        if item and stage in scripts and item == scripts[stage]:
            indent = line[:len(line) - len(line.lstrip())]
            out += [f"{indent}- {dep}" for dep in module_closure(item)]
    dvc_yaml.write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    if "--write" in sys.argv:
        rewrite()
        sys.exit(0)
    for stage, script in stage_scripts().items():
        print(f"{stage}:\n      - {script}")
        for dep in module_closure(script):
            print(f"      - {dep}")
    sys.exit(0)
