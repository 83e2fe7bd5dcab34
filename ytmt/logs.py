"""Where a DVC stage's messages go: the console shows this project's lines and every
warning; the stage's whole Python log (MLflow's, Ray's driver side, ours, at INFO) also
goes to ``outputs/logs/<stage>.log``. Ray's workers log into Ray's session folder
(``/tmp/ray/session_latest/logs``); see :mod:`ytmt.ray_local`.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

LOG_DIR = Path("outputs") / "logs"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _ConsoleFilter(logging.Filter):
    """ytmt's INFO lines and everyone's warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name.startswith("ytmt")


def stage_log_name(argv: list[str]) -> str:
    """``<script>`` or, for a training run, ``train-<variant>-seed<k>``."""
    name = Path(argv[0]).stem if argv else "stage"
    for flag, prefix in (("--variant", "-"), ("--seed", "-seed")):
        if flag in argv[:-1]:
            name += prefix + argv[argv.index(flag) + 1]
    return name


def configure_stage_logging(name: str, log_dir: str | Path = LOG_DIR) -> Path:
    """Console (stderr): ytmt INFO and all warnings, ``message`` only; file
    ``log_dir/<name>.log`` (rewritten each run): everything at INFO with time and logger.
    MLflow's own console handler and artifact download progress bars are turned off.
    Returns the log file."""
    path = Path(log_dir) / f"{name}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    console = logging.StreamHandler(sys.stderr)
    console.addFilter(_ConsoleFilter())
    console.setFormatter(logging.Formatter("%(message)s"))
    file = logging.FileHandler(path, mode="w")
    file.setFormatter(logging.Formatter(_FORMAT))
    root.addHandler(console)
    root.addHandler(file)
    logging.captureWarnings(True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow gives its logger a console handler of its own when imported: let it reach ours
    os.environ["MLFLOW_CONFIGURE_LOGGING"] = "false"
    mlflow_logger = logging.getLogger("mlflow")
    for handler in list(mlflow_logger.handlers):
        mlflow_logger.removeHandler(handler)
    mlflow_logger.propagate = True
    return path


_SAID: set[tuple[str, str]] = set()  # (logger, message) already warned by this process


def warn_once(logger: logging.Logger, message: str) -> None:
    """``logger.warning(message)`` the first time this process says it, then never again."""
    if (logger.name, message) not in _SAID:
        _SAID.add((logger.name, message))
        logger.warning(message)

