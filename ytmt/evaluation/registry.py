"""The MLflow Model Registry step: register every evaluated model, move the champion alias.

One registered model (``register.model_name``, default ``ytmt``) holds one version per
evaluated model (variant × seed); each version is tagged with its variant, seed, validation
metric and test-set means. Aliases:

- ``champion`` (``register.alias``): the version with the best ``register.metric`` (a
  validation metric of training, ``val_psnr_t`` by default; never a test-set number), or
  ``register.real_metric`` (``val_real_psnr_t``: the held-out real pairs) when every model
  has it;
- one alias per variant, named after it (``models:/ytmt@ytmt-uct``): that variant's best seed.

Re-running is idempotent: a model already registered (same logged-model URI) keeps its version
and only the aliases move. ``outputs/registry.json`` records the result.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path
from typing import Any

from ytmt.evaluation.config import RegisterConfig
from ytmt.fileio import atomic_write_text
from ytmt.tracking import filter_value, is_not_found

log = logging.getLogger(__name__)

TAG_URI = "ytmt.model_uri"


class NoChampion(ValueError):
    """No evaluated model carries the validation metric the champion is chosen by."""


def _validation_value(model: dict[str, Any], metric: str, client) -> float | None:
    value = (model.get("val_metrics") or {}).get(metric)
    if value is None and model.get("run_id"):
        value = client.get_run(model["run_id"]).data.metrics.get(metric)
    return float(value) if value is not None else None


def choose_metric(models: list[dict[str, Any]], cfg: RegisterConfig, client) -> str:
    """``cfg.real_metric`` when every model has it (held-out real pairs were scored beside
    the synthetic validation split), else ``cfg.metric``."""
    real = cfg.real_metric
    if real and models and all(_validation_value(m, real, client) is not None for m in models):
        return real
    return cfg.metric


def _ensure_logged(model: dict[str, Any], tracking_uri: str) -> str:
    """The model's MLflow model URI; a checkpoint never logged to MLflow is logged now into
    its run (see ytmt.mlflow_model.log_model)."""
    uri = model.get("model_uri")
    if uri:
        return uri
    import mlflow

    from ytmt.mlflow_model import log_model

    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=model["run_id"]):
        return log_model(model["path"], name="model").model_uri


def _existing_versions(client, name: str) -> dict[str, Any]:
    where = f"name={filter_value(name, 'register.model_name')}"
    return {mv.tags.get(TAG_URI): mv for mv in client.search_model_versions(where)
            if mv.tags.get(TAG_URI)}


def pick_best(candidates: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    """Best by ``value`` (``mode`` max/min); ties go to the earlier variant, then seed."""
    sign = -1.0 if mode == "max" else 1.0
    return min(candidates, key=lambda c: (sign * c["value"], c["variant"], c["seed"]))


def _register_version(model_uri: str, name: str):
    """``mlflow.register_model``, whose progress lines ("Registered model ... already exists.
    Creating a new version...", "Created version ...") MLflow prints straight to stderr, not
    through logging: they go to the stage's log file (logger ``mlflow.registry``, INFO), not
    to the console."""
    import mlflow

    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed):
            return mlflow.register_model(model_uri, name, tags={TAG_URI: model_uri})
    finally:
        for line in printed.getvalue().splitlines():
            if line.strip():
                logging.getLogger("mlflow.registry").info(line.strip())


def register_models(summary: dict[str, Any], cfg: RegisterConfig,
                    tracking_uri: str | None = None) -> dict[str, Any]:
    """Register the models of an evaluation ``summary`` (``outputs/eval/summary.json``) and
    set the aliases. Returns what ``outputs/registry.json`` holds."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from ytmt.tracking import check_tracking_uri, client, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri or cfg.tracking_uri or summary.get("tracking_uri"))
    check_tracking_uri(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)  # before the client, which takes its registry from here
    c = client(uri)
    name = cfg.model_name
    if not summary.get("models"):
        raise ValueError("the evaluation summary lists no models; nothing to register")
    try:
        c.get_registered_model(name)
    except MlflowException as err:  # only "does not exist yet"; a connection error surfaces
        if not is_not_found(err):
            raise
        c.create_registered_model(name, description="YTMT reflection separation models "
                                  "(pyfunc: base64 image in, transmission/reflection PNGs out)")
    existing = _existing_versions(c, name)
    metric = choose_metric(summary["models"], cfg, c)
    versions: list[dict[str, Any]] = []
    for model in summary["models"]:
        model_uri = _ensure_logged(model, uri)
        value = _validation_value(model, metric, c)
        mv = existing.get(model_uri)
        if mv is None:
            mv = _register_version(model_uri, name)
        tags = {"variant": model["variant"], "seed": str(model["seed"]),
                "vgg_weights": str(model.get("vgg_weights")), metric: str(value)}
        for set_name, metrics in (model.get("sets") or {}).items():
            for key in ("psnr_t", "ssim_t"):
                if key in metrics:
                    tags[f"test_{set_name}_{key}"] = f"{metrics[key]:.4f}"
        for k, v in tags.items():
            c.set_model_version_tag(name, mv.version, k, v)
        versions.append({"version": int(mv.version), "variant": model["variant"],
                         "seed": int(model["seed"]), "model_uri": model_uri,
                         "run_id": model.get("run_id"), "value": value})
    scored = [v for v in versions if v["value"] is not None]
    if not scored:
        raise NoChampion(f"no evaluated model has the validation metric {metric!r} (in its "
                         "training JSON or MLflow run); set register.metric to one it logs")
    aliases: dict[str, int] = {}
    champion = pick_best(scored, cfg.mode)
    c.set_registered_model_alias(name, cfg.alias, str(champion["version"]))
    aliases[cfg.alias] = champion["version"]
    for variant in sorted({v["variant"] for v in scored}):
        best = pick_best([v for v in scored if v["variant"] == variant], cfg.mode)
        if variant != cfg.alias:
            c.set_registered_model_alias(name, variant, str(best["version"]))
            aliases[variant] = best["version"]
    log.info("%s: alias %s -> version %s (%s seed %s, %s = %.4f)", name, cfg.alias,
             champion["version"], champion["variant"], champion["seed"], metric,
             champion["value"])
    return {"tracking_uri": uri, "model_name": name, "metric": metric, "mode": cfg.mode,
            "champion": {**champion, "alias": cfg.alias, "uri": f"models:/{name}@{cfg.alias}"},
            "aliases": aliases, "versions": versions}


def write_registry(result: dict[str, Any], out: str | Path) -> Path:
    return atomic_write_text(Path(out), json.dumps(result, indent=2) + "\n")
