#!/usr/bin/env python3
"""The README's two commands: set up the environment, then run the pipeline or the tests.

    python3 dev.py run     # create .venv, install, `dvc repro` the whole pipeline
    python3 dev.py test    # create .venv, install with test extras, run the test suite

Both are idempotent: the virtual environment is reused and re-installed only when
pyproject.toml changes. Extra arguments go to `dvc repro` / `pytest`.
Needs only python3 (>= 3.10) with venv and pip, and access to the package registries.

The environment is installed by uv (pinned, put into the environment by pip), which took
30-40 s here against pip's 117 s for the same packages at the same versions. uv reads
neither pip's configuration files nor its PIP_* variables, so their index settings are
passed on (with pip's rule of taking the best match from every index). If uv cannot be
installed or fails, pip installs the environment as before.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".ytmt-installed"
#: the installer (see the module docstring)
UV = "uv==0.13.10"
#: torch pinned: a bare requirement could pull a multi-GB CUDA build
TORCH = "torch==2.13.0"


def sh(*cmd: str | Path, env: dict[str, str] | None = None) -> None:
    shown = " ".join(str(c) for c in cmd)
    print("+", re.sub(r"://[^/@\s]+@", "://***@", shown), flush=True)  # no index passwords
    subprocess.run([str(c) for c in cmd], cwd=ROOT, env=env, check=True)


def ensure_env() -> dict[str, str]:
    if sys.version_info < (3, 10):  # noqa: UP036 (dev.py may be started by an older python3)
        sys.exit(f"python >= 3.10 is required, this is {sys.version.split()[0]}")
    if not (BIN / "python").exists():
        sh(sys.executable, "-m", "venv", VENV)
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not STAMP.exists() or STAMP.read_text() != want:
        try:
            sh(BIN / "python", "-m", "pip", "install", "--quiet", UV)
            options, env = uv_options()
            sh(BIN / "uv", "pip", "install", "--quiet", "--python", BIN / "python",
               "--compile-bytecode", *options, TORCH, "-e", ".[test]",
               env={**os.environ, **env})
        except subprocess.CalledProcessError as err:
            print(f"uv did not install the environment ({err}); installing with pip",
                  flush=True)
            sh(BIN / "python", "-m", "pip", "install", "--quiet", TORCH)  # torch first
            sh(BIN / "python", "-m", "pip", "install", "--quiet", "-e", ".[test]")
        STAMP.write_text(want)
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # dvc stages run `python ...`
    env["VIRTUAL_ENV"] = str(VENV)
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    return env


def uv_options() -> tuple[list[str], dict[str, str]]:
    """pip's index settings as uv options, and its certificate bundle as uv's
    ``SSL_CERT_FILE`` unless that is set: from ``pip config list``, which shows pip's
    configuration files and its ``PIP_*`` variables (``:env:``, which take precedence)."""
    listed = subprocess.run([str(BIN / "python"), "-m", "pip", "config", "list"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    flags = {"index-url": "--index-url", "extra-index-url": "--extra-index-url",
             "find-links": "--find-links", "constraint": "--constraint"}
    scopes: dict[str, dict[str, str]] = {"env": {}, "files": {}}
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        scope, _, name = key.rpartition(".")
        if name in flags or name == "cert":  # a later file overrides an earlier one
            scopes["env" if scope == ":env:" else "files"][name] = value.strip().strip("'\"")
    found = {**scopes["files"], **scopes["env"]}
    options = ["--index-strategy", "unsafe-best-match"]  # pip's rule: any index's best match
    for name, flag in flags.items():
        for value in found.get(name, "").split():
            options += [flag, value]
    env = {}
    if found.get("cert") and "SSL_CERT_FILE" not in os.environ:
        env["SSL_CERT_FILE"] = found["cert"]
    return options, env


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in ("run", "test", "setup"):
        sys.exit(__doc__)
    env = ensure_env()
    # dvc plots show/diff render offline with a local page (git-ignored, made each time)
    sh(BIN / "python", "-m", "ytmt.offline_plots", env=env)
    if argv[0] == "run":
        sh(BIN / "dvc", "repro", *argv[1:], env=env)
        sh(BIN / "dvc", "metrics", "show", env=env)
    elif argv[0] == "test":
        sh(BIN / "python", "-m", "pytest", *argv[1:], env=env)


if __name__ == "__main__":
    main(sys.argv[1:])
