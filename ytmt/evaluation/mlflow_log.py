"""How an evaluation reaches MLflow: into each model's training run (or, for a model trained
elsewhere, an evaluation run of its own).

Per model and present set: the set as a dataset input of the run (context ``test``, digest
from the data manifest or the shards), every mean metric as ``test_<set>_<metric>`` logged
against the logged model (its model id) and that dataset, so the model's and the registry's
pages show them; the best/worst grids as images ``test_<set>_best`` / ``_worst`` at
``step`` = the model's training epochs (the convention of the validation grids); the
per-image CSV and the report as artifacts.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ytmt import tracking

log = logging.getLogger(__name__)
CHECKPOINT_TAG = "ytmt.checkpoint"


def model_id(model_uri: str | None) -> str | None:
    """The logged model's id of a ``models:/<id>`` URI (None for registry URIs)."""
    if model_uri and model_uri.startswith("models:/m-") and "/" not in model_uri[8:]:
        return model_uri[len("models:/"):]
    return None


def run_for(entry, tracking_uri: str, experiment: str) -> str:
    """The entry's training run when it exists in this store, else the evaluation run of
    its checkpoint (found again on a re-run, with provenance tags)."""
    from mlflow.exceptions import MlflowException

    c = tracking.client(tracking_uri)
    if entry.run_id:
        try:
            c.get_run(entry.run_id)
            return entry.run_id
        except MlflowException as err:  # only "unknown here"; a connection error surfaces
            if not tracking.is_not_found(err):
                raise
            log.warning("%s: MLflow run %s not found in %s (%s); logging to a new run",
                        entry.key, entry.run_id, tracking_uri, err)
    _, run, _ = tracking.open_run(
        tracking_uri, experiment, {CHECKPOINT_TAG: entry.path},
        run_name=f"eval-{entry.variant}-seed{entry.seed}",
        tags={tracking.VARIANT_TAG: entry.variant, tracking.SEED_TAG: str(entry.seed)},
        resume=False)
    c.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def log_model_results(tracking_uri: str, run_id: str, entry, sets: Mapping[str, Any],
                      means: Mapping[str, Mapping[str, float]],
                      grids: Mapping[tuple[str, str], bytes], files: Mapping[str, Path]) -> None:
    """Everything one model's evaluation logs (module docstring). ``entry``: an
    ``evaluate.ModelEntry``; ``sets``: {name: ``evaluate.EvalSet``}; ``means``: {set: {metric:
    mean}}; ``grids``: {(set, "best" | "worst"): PNG}; ``files``: {artifact path: file}."""
    from mlflow.entities import Metric

    c = tracking.client(tracking_uri)
    inputs = {name: tracking.dataset_input(name, sets[name].path, sets[name].digest, "test")
              for name in means}
    tracking.log_inputs_once(tracking_uri, run_id, list(inputs.values()))
    now, mid = int(time.time() * 1000), model_id(entry.model_uri)
    batch = [Metric(f"test_{name}_{k}", float(v), now, 0, model_id=mid, dataset_name=name,
                    dataset_digest=inputs[name].dataset.digest)
             for name, ms in sorted(means.items()) for k, v in sorted(ms.items())
             if math.isfinite(v)]
    for i in range(0, len(batch), 500):
        c.log_batch(run_id, metrics=batch[i:i + 500])
    logger = tracking.RunLogger(tracking_uri, run_id)
    for (name, which), png in sorted(grids.items()):
        logger.log_image(png, key=f"test_{name}_{which}", step=entry.epochs)
    for rel, path in files.items():
        c.log_artifact(run_id, str(path), str(Path(rel).parent))


def log_report(tracking_uri: str, run_ids: list[Any], report: Path) -> None:
    for run_id in dict.fromkeys(run_ids):
        tracking.client(tracking_uri).log_artifact(run_id, str(report), "evaluation")
