"""Score every trained model on the synthetic test split and on the benchmarks present.

Inputs: the training stage's ``outputs/models`` (any ``model.pt`` below it, with the JSON
file training writes beside it: ``variant``, ``mlflow_run_id``, ``model_uri``, ``metrics``
...; several seeds of a variant live in ``<variant>/seed<k>/``), the shards' ``test`` split and
the data manifest's ``benchmarks``.

Outputs (``out``): ``per_image.csv`` (one row per model × set × image), ``summary.json`` (per
model and per variant, mean ± std over seeds), ``report.md`` (beside the paper's tables),
``visual/`` (best/worst grids); ``metrics`` (a JSON for ``dvc metrics``). Each model's numbers,
CSV rows and grids are logged to its training run in MLflow (``test_<set>_<metric>``).

Metric names: ``psnr_t``, ``ssim_t``, ``psnr_r``, ``ssim_r`` for the paper protocol, the same
with ``_strict`` for the strict one, and ``psnr_t_input`` (the input taken as T̂: the score to
beat). PSNR of identical images is capped at :data:`PSNR_CAP` so means stay finite.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ytmt.fileio import atomic_write_text
from ytmt.evaluation.config import EvaluateConfig

log = logging.getLogger(__name__)

SYNTHETIC = "synthetic"
PSNR_CAP = 100.0
LAYERS = ("t", "r")


# --------------------------------------------------------------------------- models

@dataclass(frozen=True)
class ModelEntry:
    """A trained model found under ``outputs/models``."""

    variant: str
    seed: int
    path: str  # the ytmt checkpoint (model.pt)
    run_id: str | None
    model_uri: str | None
    val_metrics: dict[str, float]
    vgg_weights: str | None
    source: str | None = None  # imported models (evaluate.imported): the file they came from

    @property
    def key(self) -> str:
        return f"{self.variant}/seed{self.seed}"


def _read_info(folder: Path) -> dict[str, Any]:
    """The training JSON beside a model: ``info.json`` if present, else the only JSON file."""
    preferred = folder / "info.json"
    candidates = [preferred] if preferred.is_file() else sorted(folder.glob("*.json"))
    for path in candidates:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            log.warning("%s: unreadable (%s); ignoring it", path, err)
            continue
        if isinstance(data, dict):
            return data
    return {}


def _seed_from_path(rel: Path) -> int | None:
    for part in reversed(rel.parts):
        m = re.fullmatch(r"seed[_-]?(\d+)", part)
        if m:
            return int(m.group(1))
    return None


def discover_models(models_dir: str | Path, default_seed: int = 0,
                    required: bool = True) -> list[ModelEntry]:
    """Every ``model.pt`` below ``models_dir`` (sorted by variant, then seed).

    variant: the JSON's ``variant``, else the checkpoint's. seed: the JSON's ``seed``, else a
    ``seed<k>`` folder in the path, else ``default_seed``. Validation metrics: ``val_*`` keys
    at the JSON's top level or in its ``metrics`` mapping. ``required=False``: no models is
    not an error (imported models are scored)."""
    from ytmt.checkpoint import load_checkpoint

    root = Path(models_dir)
    if not required and not any(root.rglob("model.pt")):
        return []
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no trained models (run the train stage first)")
    entries: dict[tuple[str, int], ModelEntry] = {}
    for path in sorted(root.rglob("model.pt")):
        info = _read_info(path.parent)
        ckpt = load_checkpoint(path)
        variant = str(info.get("variant") or ckpt["model"]["variant"])
        seed = info.get("seed")
        if seed is None:
            seed = _seed_from_path(path.relative_to(root).parent)
        seed = int(seed if seed is not None else default_seed)
        metrics = dict(info.get("metrics") or {})
        metrics.update({k: v for k, v in info.items() if k.startswith("val_")})
        val = {k: float(v) for k, v in metrics.items()
               if k.startswith("val_") and isinstance(v, (int, float))}
        entry = ModelEntry(variant=variant, seed=seed, path=str(path.resolve()),
                           run_id=info.get("mlflow_run_id") or info.get("run_id"),
                           model_uri=info.get("model_uri"), val_metrics=val,
                           vgg_weights=info.get("vgg_weights") or ckpt["vgg"]["mode"])
        if (variant, seed) in entries:
            raise ValueError(f"two models for {variant} seed {seed}: "
                             f"{entries[(variant, seed)].path} and {path}")
        entries[(variant, seed)] = entry
    if not entries:
        raise FileNotFoundError(f"{root}: no model.pt below it (run the train stage first)")
    return sorted(entries.values(), key=lambda e: (e.variant, e.seed))


def discover_imported(imported: dict[str, str]) -> list[ModelEntry]:
    """The models of params ``evaluate.imported`` (name → folder of ``ytmt import-authors``),
    each scored under its name as ``variant``, seed 0, without validation metrics."""
    from ytmt.checkpoint import load_checkpoint

    entries = []
    for name, folder in imported.items():
        path = Path(folder) / "model.pt"
        if not path.is_file():
            raise FileNotFoundError(f"evaluate.imported.{name}: {path} not found (make it with "
                                    f"`ytmt import-authors FILE --out {folder}`)")
        info = _read_info(path.parent)
        ckpt = load_checkpoint(path)
        src = info.get("source") or {}
        source = (f"{src.get('file', '?')} (sha256 {str(src.get('sha256', '?'))[:12]}, epoch "
                  f"{src.get('epoch')}, iterations {src.get('iterations')})")
        entries.append(ModelEntry(variant=name, seed=0, path=str(path.resolve()),
                                  run_id=info.get("mlflow_run_id"),
                                  model_uri=info.get("model_uri"), val_metrics={},
                                  vgg_weights=info.get("vgg_weights") or ckpt["vgg"]["mode"],
                                  source=source))
    return entries


# --------------------------------------------------------------------------- sets

@dataclass(frozen=True)
class EvalSet:
    name: str
    kind: str  # "synthetic" | "benchmark"
    path: str
    present: bool
    count: int = 0
    error: str | None = None
    source: dict[str, Any] | None = None  # <set>/SOURCE.json, written by ytmt's fetcher


def read_set_source(path: str | Path) -> dict[str, Any] | None:
    """``<set>/SOURCE.json`` (which copy or list was fetched, archive, sha256) or None."""
    try:
        data = json.loads((Path(path) / "SOURCE.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def plan_sets(cfg: EvaluateConfig, shards: str | Path | None,
              manifest: str | Path | None) -> list[EvalSet]:
    """The synthetic test split (when ``cfg.synthetic``) and every benchmark of the manifest,
    present or not (absent ones are reported, never fatal)."""
    sets: list[EvalSet] = []
    if cfg.synthetic:
        sets.append(_synthetic_set(shards))
    if manifest is not None:
        manifest = Path(manifest)
        if not manifest.is_file():
            raise FileNotFoundError(f"{manifest}: missing; run the scan stage first")
        for name, e in json.loads(manifest.read_text()).get("benchmarks", {}).items():
            if name == SYNTHETIC:
                raise ValueError(f"{manifest}: a benchmark may not be called {SYNTHETIC!r}")
            path = str(e.get("path", ""))
            sets.append(EvalSet(name, "benchmark", path, bool(e.get("present")),
                                int(e.get("count") or 0), e.get("error"),
                                read_set_source(path) if path else None))
    return sets


def _synthetic_set(shards: str | Path | None) -> EvalSet:
    if shards is None:
        return EvalSet(SYNTHETIC, "synthetic", "", False, error="no shards given")
    from ytmt.data.shards import read_manifest

    try:
        manifest = read_manifest(shards)
    except (FileNotFoundError, ValueError) as err:
        return EvalSet(SYNTHETIC, "synthetic", str(shards), False, error=str(err))
    count = int(manifest["splits"].get("test", {}).get("rows", 0))
    if count == 0:
        return EvalSet(SYNTHETIC, "synthetic", str(shards), False,
                       error="the shards' test split is empty (synthesize.test_mixtures: 0?)")
    return EvalSet(SYNTHETIC, "synthetic", str(shards), True, count)


@dataclass
class Sample:
    name: str
    mixture: np.ndarray  # HxWx3 float32 in [0, 1]
    transmission: np.ndarray
    reflection: np.ndarray  # ground truth, or I − T for real sets
    reflection_source: str


def iter_samples(eval_set: EvalSet, max_images: int | None = None) -> Iterator[Sample]:
    """The images of a present set, one at a time."""
    if eval_set.kind == "synthetic":
        gen = _iter_synthetic(eval_set.path)
    else:
        from ytmt.data.benchmarks import read_benchmark

        gen = (Sample(p.name, p.mixture, p.transmission, p.reflection, p.reflection_source)
               for p in read_benchmark(eval_set.path))
    for i, sample in enumerate(gen):
        if max_images is not None and i >= max_images:
            return
        yield sample


def _iter_synthetic(root: str) -> Iterator[Sample]:
    from ytmt.data.reader import ShardDataset

    ds = ShardDataset(root, split="test", crop=None, augment=False)
    for i, s in enumerate(ds):
        hwc = {k: s[k].numpy().transpose(1, 2, 0) for k in ("mixture", "transmission",
                                                             "reflection")}
        yield Sample(str(s.get("id", i)), hwc["mixture"], hwc["transmission"],
                     hwc["reflection"], "ground_truth")


# --------------------------------------------------------------------------- scoring

def metric_name(metric: str, layer: str, protocol: str) -> str:
    return f"{metric}_{layer}" + ("" if protocol == "paper" else f"_{protocol}")


def metric_names(protocols: tuple[str, ...]) -> list[str]:
    names = [metric_name(m, layer, p) for p in protocols for layer in LAYERS
             for m in ("psnr", "ssim")]
    return names + ["psnr_t_input"]


def score_sample(t_hat: np.ndarray, r_hat: np.ndarray, sample: Sample,
                 protocols: tuple[str, ...]) -> dict[str, float]:
    from ytmt.metrics import psnr_ssim

    out: dict[str, float] = {}
    for p in protocols:
        for layer, pred, target in (("t", t_hat, sample.transmission),
                                    ("r", r_hat, sample.reflection)):
            psnr, ssim = psnr_ssim(pred, target, p)
            out[metric_name("psnr", layer, p)] = min(psnr, PSNR_CAP)
            out[metric_name("ssim", layer, p)] = ssim
    out["psnr_t_input"] = min(psnr_ssim(sample.mixture, sample.transmission, "paper")[0],
                              PSNR_CAP)
    return out


@dataclass
class Case:
    score: float
    name: str
    images: tuple[np.ndarray, ...]  # uint8 input, T̂, R̂, T


@dataclass
class Cases:
    """The ``k`` best and ``k`` worst images of a set by paper PSNR of T."""

    k: int
    best: list[Case] = field(default_factory=list)
    worst: list[Case] = field(default_factory=list)

    def offer(self, score: float, name: str, images: tuple[np.ndarray, ...]) -> None:
        if self.k == 0:
            return
        from ytmt.metrics import to_uint8

        case = Case(score, name, tuple(to_uint8(im) for im in images))
        self.best = sorted([*self.best, case], key=lambda c: -c.score)[:self.k]
        self.worst = sorted([*self.worst, case], key=lambda c: c.score)[:self.k]


def evaluate_model_on_set(model, eval_set: EvalSet, cfg: EvaluateConfig,
                          progress=None) -> tuple[list[dict[str, Any]], Cases]:
    """Per-image rows (``image``, ``reflection_source``, metrics) and the best/worst cases."""
    from ytmt.inference import separate

    rows: list[dict[str, Any]] = []
    cases = Cases(cfg.visual_cases)
    for sample in iter_samples(eval_set, cfg.max_images):
        t_hat, r_hat = separate(model, sample.mixture, tile=cfg.tile or None,
                                overlap=cfg.overlap, device=cfg.device)
        scores = score_sample(t_hat, r_hat, sample, cfg.protocols)
        rows.append({"image": sample.name, "reflection_source": sample.reflection_source,
                     **scores})
        cases.offer(scores.get("psnr_t", scores[next(iter(scores))]), sample.name,
                    (sample.mixture, t_hat, r_hat, sample.transmission))
        if progress is not None:
            progress()
    return rows, cases


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for one value) of finite values."""
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "n": int(len(arr))}


def aggregate(per_model: dict[str, dict[str, dict[str, float]]],
              entries: list[ModelEntry]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """{variant: {set: {metric: {mean, std, n}}}} over the seeds of each variant, from
    ``per_model`` = {model key: {set: {metric: mean over images}}}."""
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for variant in sorted({e.variant for e in entries}):
        keys = [e.key for e in entries if e.variant == variant]
        sets = sorted({s for k in keys for s in per_model.get(k, {})})
        out[variant] = {}
        for s in sets:
            metrics = sorted({m for k in keys for m in per_model.get(k, {}).get(s, {})})
            out[variant][s] = {m: mean_std([per_model[k][s][m] for k in keys
                                            if s in per_model.get(k, {})]) for m in metrics}
    return out


# --------------------------------------------------------------------------- outputs



def rows_to_csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


def case_grid_png(cases: list[Case], title: str) -> bytes:
    """Rows of input | T̂ | R̂ | T with each row's name and PSNR of T."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = ("input I", "estimated T", "estimated R", "true T")
    fig, axes = plt.subplots(len(cases), 4, figsize=(10, 2.6 * len(cases)), squeeze=False)
    for r, case in enumerate(cases):
        for c, (img, label) in enumerate(zip(case.images, cols)):
            ax = axes[r][c]
            ax.imshow(img)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(label, fontsize=9)
        axes[r][0].set_ylabel(f"{case.name}\n{case.score:.2f} dB", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()





def dvc_metrics(variants: dict[str, Any], sets: list[EvalSet]) -> dict[str, Any]:
    """{variant: {set: {metric: mean, metric_std: std when several seeds}}} (absent sets are
    listed as ``{"present": false}``)."""
    out: dict[str, Any] = {}
    for variant, per_set in variants.items():
        out[variant] = {}
        for s in sets:
            if s.name not in per_set:
                out[variant][s.name] = {"present": False}
                continue
            vals: dict[str, Any] = {}
            for metric, stats in per_set[s.name].items():
                vals[metric] = round(stats["mean"], 4)
                if stats["n"] > 1:
                    vals[f"{metric}_std"] = round(stats["std"], 4)
            vals["seeds"] = max(st["n"] for st in per_set[s.name].values())
            out[variant][s.name] = vals
    return out


def entry_dict(entry: ModelEntry) -> dict[str, Any]:
    return {**asdict(entry), "key": entry.key}


# --------------------------------------------------------------------------- the stage

def _mlflow_run_for(entry: ModelEntry, tracking_uri: str, experiment: str) -> str:
    """The entry's training run when it exists in this store, else a new evaluation run."""
    from ytmt import tracking

    c = tracking.client(tracking_uri)
    if entry.run_id:
        try:
            c.get_run(entry.run_id)
            return entry.run_id
        except Exception as err:  # noqa: BLE001 - MlflowException: run unknown in this store
            log.warning("%s: MLflow run %s not found in %s (%s); logging to a new run",
                        entry.key, entry.run_id, tracking_uri, err)
    exp_id = tracking.get_or_create_experiment(tracking_uri, experiment)
    run = c.create_run(exp_id, run_name=f"eval-{entry.variant}-seed{entry.seed}",
                       tags={"variant": entry.variant, "seed": str(entry.seed),
                             "ytmt.checkpoint": entry.path})
    c.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def _log_to_mlflow(tracking_uri: str, run_id: str, metrics: dict[str, float],
                   files: dict[str, Path]) -> None:
    """``metrics`` (step 0) and ``files`` ({artifact sub-folder/name: local path})."""
    import time

    from mlflow.entities import Metric

    from ytmt import tracking

    c = tracking.client(tracking_uri)
    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, 0) for k, v in sorted(metrics.items())
             if math.isfinite(v)]
    for i in range(0, len(batch), 500):
        c.log_batch(run_id, metrics=batch[i:i + 500])
    for rel, path in files.items():
        c.log_artifact(run_id, str(path), str(Path(rel).parent))


def run_evaluation(cfg: EvaluateConfig, models_dir: str | Path, shards: str | Path | None,
                   manifest: str | Path | None, out: str | Path,
                   metrics_path: str | Path | None = None, default_seed: int = 0,
                   log_mlflow: bool = True, tracking_uri: str | None = None) -> dict[str, Any]:
    """Score every model on every present set, write the outputs (module docstring) and log
    to MLflow. Returns the summary (also ``out/summary.json``). ``out`` is built in a
    temporary sibling folder and swapped in at the end: an interrupted run leaves the previous
    results (or nothing), never a half-written folder. ``tracking_uri`` (e.g. the training
    section's) is used when ``cfg.tracking_uri`` is null."""
    import torch

    from ytmt.tracking import check_tracking_uri, resolve_tracking_uri

    final = Path(out)
    entries = discover_models(models_dir, default_seed, required=not cfg.imported)
    entries += discover_imported(cfg.imported)
    sets = plan_sets(cfg, shards, manifest)
    tracking_uri = resolve_tracking_uri(cfg.tracking_uri or tracking_uri)
    if log_mlflow:
        check_tracking_uri(tracking_uri)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    final.parent.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.partial-"))
    try:
        summary = _evaluate_into(cfg, entries, sets, out, tracking_uri, log_mlflow)
        _replace_dir(out, final)
    finally:
        if out.exists():
            shutil.rmtree(out, ignore_errors=True)
    if metrics_path is not None:
        atomic_write_text(Path(metrics_path),
                          json.dumps(dvc_metrics(summary["variants"], sets), indent=2) + "\n")
    return summary


def _replace_dir(src: Path, dst: Path) -> None:
    """Put the finished folder ``src`` in place of ``dst`` (old content removed)."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def _score_entry(entry: ModelEntry, present: list[EvalSet], cfg: EvaluateConfig, out: Path,
                 columns: list[str], bar) -> tuple[list[dict[str, Any]],
                                                   dict[str, dict[str, float]], dict[str, Path]]:
    """One model on every present set: its rows, per-set means and the files to log
    (per-model CSV, best/worst grids), written under ``out``."""
    from ytmt.checkpoint import model_from_checkpoint

    model = model_from_checkpoint(entry.path).to(cfg.device)
    rows_of_model: list[dict[str, Any]] = []
    means: dict[str, dict[str, float]] = {}
    files: dict[str, Path] = {}
    for s in present:
        bar.set_postfix_str(f"{entry.key} {s.name}")
        rows, cases = evaluate_model_on_set(model, s, cfg, progress=lambda: bar.update(1))
        if not rows:
            continue
        rows_of_model += [{"variant": entry.variant, "seed": entry.seed, "set": s.name, **r}
                          for r in rows]
        names = [k for k in rows[0] if k not in ("image", "reflection_source")]
        means[s.name] = {k: float(np.mean([r[k] for r in rows])) for k in names}
        for which in ("best", "worst"):
            chosen = getattr(cases, which)
            if chosen:
                path = out / "visual" / entry.variant / f"seed{entry.seed}" / \
                    f"{s.name}_{which}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(case_grid_png(
                    chosen, f"{entry.key} on {s.name}: {which} {len(chosen)} by PSNR of T"))
                files[f"evaluation/{path.name}"] = path
    model_csv = out / "per_model" / f"{entry.variant}_seed{entry.seed}.csv"
    atomic_write_text(model_csv, rows_to_csv(rows_of_model, columns))
    files[f"evaluation/{model_csv.name}"] = model_csv
    return rows_of_model, means, files


def _evaluate_into(cfg: EvaluateConfig, entries: list[ModelEntry], sets: list[EvalSet],
                   out: Path, tracking_uri: str, log_mlflow: bool) -> dict[str, Any]:
    from tqdm import tqdm

    from ytmt.evaluation.report import render_report

    present = [s for s in sets if s.present]
    for s in sets:
        if not s.present:
            log.warning("set %s is absent%s", s.name, f": {s.error}" if s.error else "")
    columns = ["variant", "seed", "set", "image", "reflection_source",
               *metric_names(cfg.protocols)]
    all_rows: list[dict[str, Any]] = []
    per_model: dict[str, dict[str, dict[str, float]]] = {}
    models_out: list[dict[str, Any]] = []
    total = len(entries) * sum(min(s.count, cfg.max_images or s.count) for s in present)
    with tqdm(total=total, unit="img", desc="evaluate") as bar:
        for entry in entries:
            rows, per_model[entry.key], files = _score_entry(entry, present, cfg, out,
                                                             columns, bar)
            all_rows += rows
            run_id = entry.run_id
            if log_mlflow:
                run_id = _mlflow_run_for(entry, tracking_uri, cfg.experiment)
                flat = {f"test_{s}_{m}": v for s, ms in per_model[entry.key].items()
                        for m, v in ms.items()}
                _log_to_mlflow(tracking_uri, run_id, flat, files)
            models_out.append({**entry_dict(entry), "run_id": run_id,
                               "sets": per_model[entry.key]})
    scored = {s.name: sum(1 for r in all_rows if r["set"] == s.name) // len(entries)
              for s in sets}
    summary = {
        "protocols": list(cfg.protocols),
        "tracking_uri": tracking_uri if log_mlflow else None,
        "sets": [{**asdict(s), "scored": scored[s.name]} for s in sets],
        "models": models_out,
        "variants": aggregate(per_model, entries),
    }
    atomic_write_text(out / "per_image.csv", rows_to_csv(all_rows, columns))
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "report.md", render_report(summary))
    if log_mlflow:
        for m in models_out:
            _log_to_mlflow(tracking_uri, m["run_id"], {},
                           {"evaluation/report.md": out / "report.md"})
    return summary
