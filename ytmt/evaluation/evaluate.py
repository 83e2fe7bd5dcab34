"""Score every trained model on the synthetic test split and on the benchmarks present.

Inputs: the trained runs' folders ``outputs/models/<variant>/seed<k>/`` (ytmt.model_store),
the shards' ``test`` split and the data manifest's ``benchmarks``.

Outputs (``out``): ``per_image.csv`` (one row per model × set × image), ``summary.json`` (per
model and per variant, mean ± std over seeds), ``report.md`` (beside the paper's tables),
``visual/`` (best/worst grids); ``metrics`` (one ``dvc metrics`` row per run and set,
:mod:`ytmt.evaluation.outputs`). Each model's numbers, CSV rows and grids go to its training
run in MLflow (:mod:`ytmt.evaluation.mlflow_log`).

Metric names: those of :func:`ytmt.metrics.score_images`, the scoring validation shares:
``psnr_t``, ``ssim_t``, ``psnr_r``, ``ssim_r`` for the paper protocol, the same with
``_strict`` for the strict one, and ``psnr_t_input``, ``ssim_t_input`` (the input taken as T̂:
the score to beat). PSNR of identical images is capped at ``ytmt.metrics.PSNR_CAP`` so means
stay finite.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
from collections.abc import Generator, Iterator
from contextlib import closing, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ytmt.evaluation.config import EvaluateConfig
from ytmt.evaluation.outputs import aggregate, case_grid_png, rows_to_csv, write_dvc_metrics
from ytmt.fileio import atomic_write_text, partial_dir, replace_dir
from ytmt.metrics import metric_name, metric_names, score_images
from ytmt.precision import resolve_precision

log = logging.getLogger(__name__)

SYNTHETIC = "synthetic"


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
    epochs: int = 0
    source: str | None = None  # imported models (evaluate.imported): the file they came from
    tracking_uri: str | None = None  # the store its training run is in (info.json)

    @property
    def key(self) -> str:
        return f"{self.variant}/seed{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "key": self.key}


def _entry(folder: Path) -> ModelEntry:
    from ytmt.model_store import MODEL_FILE, read_info

    info = read_info(folder)
    path = folder / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing beside {folder / 'info.json'}")
    return ModelEntry(variant=info.variant, seed=int(info.seed), path=str(path.resolve()),
                      run_id=info.mlflow_run_id, model_uri=info.model_uri,
                      val_metrics=info.val_metrics, vgg_weights=info.vgg_weights,
                      epochs=int(info.epochs), tracking_uri=info.tracking_uri)


def discover_models(models_dir: str | Path, runs=None, required: bool = True
                    ) -> list[ModelEntry]:
    """The trained models to evaluate, sorted by variant, then seed (ytmt.model_store).

    ``runs`` (``train.runs()``): exactly those runs' folders, each required (a folder left by
    a run no longer listed is ignored). ``None``: every ``<variant>/seed<k>/info.json``
    below ``models_dir``. ``required=False``: no trained model is not an error (only imported
    models are scored)."""
    from ytmt.model_store import INFO_FILE, run_dir

    root = Path(models_dir)
    if not required and not root.is_dir():
        return []
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no trained models (run the train stage first)")
    if runs is None:
        folders = sorted(p.parent for p in root.glob(f"*/seed*/{INFO_FILE}"))
    else:
        folders = [run_dir(root, r.variant, r.seed) for r in runs]
        missing = [f for f in folders if not (f / INFO_FILE).is_file()]
        if missing:
            raise FileNotFoundError(f"{missing[0]}: no trained model for a run listed in "
                                    "params (run its train stage: `dvc repro train`)")
    if not folders and not required:
        return []
    if not folders:
        raise FileNotFoundError(f"{root}: no <variant>/seed<k>/model.pt below it (run the "
                                "train stage first)")
    return sorted((_entry(f) for f in folders), key=lambda e: (e.variant, e.seed))


def discover_imported(imported: dict[str, str]) -> list[ModelEntry]:
    """The models of params ``evaluate.imported`` (name → folder of ``ytmt import-authors``),
    each scored under its name as ``variant``, seed 0, without validation metrics."""
    from ytmt.model_store import MODEL_FILE, read_info

    entries = []
    for name, folder in imported.items():
        path = Path(folder) / MODEL_FILE
        if not path.is_file():
            raise FileNotFoundError(f"evaluate.imported.{name}: {path} not found (make it with "
                                    f"`ytmt import-authors FILE --out {folder}`)")
        info = read_info(path.parent)
        src = info.source or {}
        source = (f"{src.get('file', '?')} (sha256 {str(src.get('sha256', '?'))[:12]}, epoch "
                  f"{src.get('epoch')}, iterations {src.get('iterations')})")
        entries.append(ModelEntry(variant=name, seed=0, path=str(path.resolve()),
                                  run_id=info.mlflow_run_id, model_uri=info.model_uri,
                                  val_metrics={}, vgg_weights=info.vgg_weights,
                                  epochs=info.epochs, source=source))
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
    digest: str = ""  # content hash: the scan manifest's, or the shards' fingerprint
    source: dict[str, Any] | None = None  # <set>/SOURCE.json of ytmt's fetcher (manifest)


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
            sets.append(EvalSet(name, "benchmark", str(e.get("path", "")),
                                bool(e.get("present")), int(e.get("count") or 0), e.get("error"),
                                str(e.get("digest") or ""), e.get("source")))
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
    digest = str(manifest.get("fingerprint") or "")
    return EvalSet(SYNTHETIC, "synthetic", str(shards), True, count, digest=digest)


@dataclass
class Sample:
    name: str
    mixture: np.ndarray  # HxWx3 float32 in [0, 1]
    transmission: np.ndarray
    reflection: np.ndarray  # ground truth, or I − T for real sets
    reflection_source: str


def iter_samples(eval_set: EvalSet, max_images: int | None = None, start: int = 0,
                 stop: int | None = None) -> Iterator[Sample]:
    """The images of a present set, one at a time: positions ``start`` to ``stop`` (excluded;
    None: the end) of the first ``max_images`` (None: all). A benchmark reads only the pairs
    in that range; the synthetic split decodes its shards up to ``stop``."""
    end = max_images if stop is None else min(stop, max_images or stop)
    if eval_set.kind == "synthetic":
        yield from itertools.islice(iter_synthetic(eval_set.path), start, end)
        return
    from ytmt.data.benchmarks import read_pair
    from ytmt.data.layout import find_pairs

    for files in find_pairs(eval_set.path)[start:end]:
        p = read_pair(files)
        yield Sample(p.name, p.mixture, p.transmission, p.reflection, p.reflection_source)


def iter_synthetic(root: str | Path, split: str = "test") -> Iterator[Sample]:
    """The shards' ``split`` as whole stored mixtures (no crop, no flip), one at a time."""
    from ytmt.data.reader import ShardDataset

    ds = ShardDataset(str(root), split=split, crop=None, augment=False)
    for i, s in enumerate(ds):
        hwc = {k: s[k].numpy().transpose(1, 2, 0) for k in ("mixture", "transmission",
                                                             "reflection")}
        yield Sample(str(s.get("id", i)), hwc["mixture"], hwc["transmission"],
                     hwc["reflection"], "ground_truth")


# --------------------------------------------------------------------------- scoring

@dataclass
class Case:
    score: float
    name: str
    images: tuple[np.ndarray, ...]  # uint8 input, T̂, R̂, T
    index: int = 0  # the image's position in its set


def ranking_metric(protocols: tuple[str, ...]) -> str:
    """What best/worst cases are ranked by: PSNR of T under the paper protocol, or under
    the strict one when the paper protocol is not configured."""
    return metric_name("psnr", "t", "paper" if "paper" in protocols else protocols[0])


@dataclass
class Cases:
    """The ``k`` best and ``k`` worst images of a set by :func:`ranking_metric`."""

    k: int
    best: list[Case] = field(default_factory=list)
    worst: list[Case] = field(default_factory=list)

    def offer(self, score: float, name: str, images: tuple[np.ndarray, ...],
              index: int = 0) -> None:
        if self.k == 0:
            return
        from ytmt.metrics import to_uint8

        self.add(Case(score, name, tuple(to_uint8(im) for im in images), index))

    def add(self, case: Case) -> None:
        """Keep ``case`` if it is among the ``k`` best or worst so far; ties keep the case
        offered first, so offering images in their set's order decides ties the same way
        however the set was split."""
        self.best = sorted([*self.best, case], key=lambda c: -c.score)[:self.k]
        self.worst = sorted([*self.worst, case], key=lambda c: c.score)[:self.k]

    def candidates(self) -> list[Case]:
        """The cases kept (best and worst, each once) in their set's order: offered in that
        order to the :class:`Cases` of the whole set, the candidates of its parts give the
        same best and worst as scoring the set in one piece."""
        kept = {c.index: c for c in [*self.best, *self.worst]}
        return [kept[i] for i in sorted(kept)]


def evaluate_model_on_set(model, eval_set: EvalSet, cfg: EvaluateConfig,
                          progress=None, start: int = 0,
                          stop: int | None = None) -> tuple[list[dict[str, Any]], Cases]:
    """Per-image rows (``image``, ``reflection_source``, metrics) and the best/worst cases
    of the set's images ``start`` to ``stop`` (:func:`iter_samples`)."""
    from ytmt.inference import separate

    rows: list[dict[str, Any]] = []
    cases = Cases(cfg.visual_cases)
    samples = iter_samples(eval_set, cfg.max_images, start, stop)
    for index, sample in enumerate(samples, start):
        t_hat, r_hat = separate(model, sample.mixture, tile=cfg.tile or None,
                                overlap=cfg.overlap, device=cfg.device,
                                precision=cfg.precision)
        scores = score_images(t_hat, r_hat, sample.mixture, sample.transmission,
                              sample.reflection, cfg.protocols)
        rows.append({"image": sample.name, "reflection_source": sample.reflection_source,
                     **scores})
        cases.offer(scores[ranking_metric(cfg.protocols)], sample.name,
                    (sample.mixture, t_hat, r_hat, sample.transmission), index)
        if progress is not None:
            progress()
    return rows, cases


# --------------------------------------------------------------------------- the stage

#: oneDNN reads this once, when the process creates its first primitive (convolution)
PRIMITIVE_CACHE_ENV = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"


@contextmanager
def bound_primitive_cache(cfg: EvaluateConfig) -> Iterator[None]:
    """Whole-image scoring on the CPU (``tile: 0``) turns oneDNN's primitive cache off
    unless ``$ONEDNN_PRIMITIVE_CACHE_CAPACITY`` is set. Benchmark photos come in many sizes,
    and the cache (1,024 primitives by default) keeps every size's convolutions with their
    buffers: peak memory grew from 1.4 to 2.7 GiB over 60 Real20-sized photos of a width-8
    model, and stayed at 1.4 GiB without the cache, at the same seconds per photo (a
    primitive is built in milliseconds, a photo takes seconds; bench/bench_scale.py). Tiled
    scoring repeats one tile shape, so it keeps the cache. Takes effect only in a process
    that has not yet run a convolution, like the evaluate stage's. The variable is set only
    inside the ``with`` block (oneDNN reads it at its first primitive): a process that
    evaluates and then starts others (a notebook, the test suite) does not hand a cache-less
    oneDNN to them; training without the cache ran at half speed. Ray workers of
    ``evaluate.workers`` get the same setting from :func:`primitive_cache_env` (they are
    processes of their own that only evaluate)."""
    env = primitive_cache_env(cfg, cfg.device)
    if not env:
        yield
        return
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.pop(PRIMITIVE_CACHE_ENV, None)


def primitive_cache_env(cfg: EvaluateConfig, device: str) -> dict[str, str]:
    """The environment that turns oneDNN's primitive cache off for whole-image scoring on
    ``device`` (:func:`bound_primitive_cache`): empty for tiles, a GPU, or a user's own
    ``$ONEDNN_PRIMITIVE_CACHE_CAPACITY``."""
    if cfg.tile != 0 or device != "cpu" or PRIMITIVE_CACHE_ENV in os.environ:
        return {}
    return {PRIMITIVE_CACHE_ENV: "0"}


def training_store(entries: list[ModelEntry]) -> str | None:
    """The tracking store the models' training runs are in (their ``info.json``), which
    evaluation logs to when ``evaluate.tracking_uri`` is null: a run trained with
    ``--tracking-uri`` or another ``$MLFLOW_TRACKING_URI`` is followed, never replaced by an
    evaluation run in this process's default store. None when no model records one;
    :class:`ConfigError` when they disagree (set ``evaluate.tracking_uri`` to choose)."""
    from ytmt.config import ConfigError

    stores = sorted({e.tracking_uri for e in entries if e.tracking_uri})
    if len(stores) > 1:
        owners = {s: [e.key for e in entries if e.tracking_uri == s] for s in stores}
        raise ConfigError(f"the models were trained into {len(stores)} tracking stores "
                          f"({owners}); set evaluate.tracking_uri to the one to log to")
    return stores[0] if stores else None


def run_evaluation(cfg: EvaluateConfig, models_dir: str | Path, shards: str | Path | None,
                   manifest: str | Path | None, out: str | Path,
                   metrics_dir: str | Path | None = None, log_mlflow: bool = True,
                   tracking_uri: str | None = None, runs=None) -> dict[str, Any]:
    """Score every model on every present set, write the outputs (module docstring) and log
    to MLflow. Returns the summary (also ``out/summary.json``). ``out`` is built in a
    temporary sibling folder and swapped in at the end: an interrupted run leaves the previous
    results (or nothing), never a half-written folder. The store logged to is
    ``cfg.tracking_uri``, else the one the models were trained into (:func:`training_store`),
    else ``tracking_uri`` (e.g. the training section's). ``cfg.workers`` > 0 fans the
    scoring out over Ray workers (:mod:`ytmt.evaluation.fanout`); the files and MLflow
    entries are the same as in this process."""
    import torch

    from ytmt.tracking import check_tracking_uri, resolve_tracking_uri

    final = Path(out)
    entries = discover_models(models_dir, runs, required=not cfg.imported)
    entries += discover_imported(cfg.imported)
    sets = plan_sets(cfg, shards, manifest)
    tracking_uri = resolve_tracking_uri(cfg.tracking_uri or training_store(entries)
                                        or tracking_uri)
    if log_mlflow:
        check_tracking_uri(tracking_uri)
    if cfg.torch_threads and not cfg.workers:
        torch.set_num_threads(cfg.torch_threads)
    out = partial_dir(final)
    try:
        # fanned out, this process runs no convolution: the workers get the setting
        with bound_primitive_cache(cfg) if not cfg.workers else nullcontext():
            summary = _evaluate_into(cfg, entries, sets, out, tracking_uri, log_mlflow)
        replace_dir(out, final)
    finally:
        if out.exists():
            shutil.rmtree(out, ignore_errors=True)
    if metrics_dir is not None:
        write_dvc_metrics(summary["models"], metrics_dir)
    return summary


@dataclass
class Scored:
    """One model's evaluation: per-image rows, per-set means, the best/worst grids (PNG,
    also written under ``visual/``) and the per-model CSV."""

    rows: list[dict[str, Any]]
    means: dict[str, dict[str, float]]
    grids: dict[tuple[str, str], bytes]
    csv: Path


#: one model on one set: its per-image rows (in the set's order) and best/worst cases
SetResult = tuple[list[dict[str, Any]], Cases]


def _score_here(cfg: EvaluateConfig, entries: list[ModelEntry], present: list[EvalSet],
                bar) -> Iterator[tuple[ModelEntry, dict[str, SetResult], str]]:
    """Each model on every present set in this process, one model at a time: (entry, set
    name → result, the resolved precision)."""
    from ytmt.checkpoint import model_from_checkpoint

    precision = resolve_precision(cfg.precision, cfg.device)
    for entry in entries:
        model = model_from_checkpoint(entry.path).to(cfg.device)
        results: dict[str, SetResult] = {}
        for s in present:
            bar.set_postfix_str(f"{entry.key} {s.name}")
            results[s.name] = evaluate_model_on_set(model, s, cfg,
                                                    progress=lambda: bar.update(1))
        yield entry, results, precision


def _write_entry(entry: ModelEntry, present: list[EvalSet], results: dict[str, SetResult],
                 cfg: EvaluateConfig, out: Path, columns: list[str]) -> Scored:
    """One model's results on every present set; its files are written under ``out``."""
    scored = Scored([], {}, {}, out / "per_model" / f"{entry.variant}_seed{entry.seed}.csv")
    rank = ranking_metric(cfg.protocols)
    for s in present:
        rows, cases = results[s.name]
        if not rows:
            continue
        scored.rows += [{"variant": entry.variant, "seed": entry.seed, "set": s.name, **r}
                        for r in rows]
        names = [k for k in rows[0] if k not in ("image", "reflection_source")]
        scored.means[s.name] = {k: float(np.mean([r[k] for r in rows])) for k in names}
        for which in ("best", "worst"):
            chosen = getattr(cases, which)
            if chosen:
                png = case_grid_png(chosen, f"{entry.key} on {s.name}: {which} {len(chosen)} "
                                            f"by {rank}")
                path = out / "visual" / entry.variant / f"seed{entry.seed}" / \
                    f"{s.name}_{which}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(png)
                scored.grids[(s.name, which)] = png
    atomic_write_text(scored.csv, rows_to_csv(scored.rows, columns))
    return scored


def _scored(cfg: EvaluateConfig, entries: list[ModelEntry], present: list[EvalSet],
            bar) -> Generator[tuple[ModelEntry, dict[str, SetResult], str], None, None]:
    """The models' results in ``entries``' order: in this process (``workers: 0``) or from
    Ray workers (:func:`ytmt.evaluation.fanout.score_models`)."""
    if not cfg.workers:
        return _score_here(cfg, entries, present, bar)
    from ytmt.evaluation.fanout import score_models

    return score_models(cfg, entries, present, bar)


def _evaluate_into(cfg: EvaluateConfig, entries: list[ModelEntry], sets: list[EvalSet],
                   out: Path, tracking_uri: str, log_mlflow: bool) -> dict[str, Any]:
    from tqdm import tqdm

    from ytmt.evaluation import mlflow_log
    from ytmt.evaluation.report import render_report

    present = [s for s in sets if s.present]
    for s in sets:
        if s.error:
            log.warning("set %s cannot be read: %s", s.name, s.error)
        elif not s.present:
            log.info("set %s is absent (%s)", s.name, s.path or "not configured")
    columns = ["variant", "seed", "set", "image", "reflection_source",
               *metric_names(cfg.protocols)]
    all_rows: list[dict[str, Any]] = []
    per_model: dict[str, dict[str, dict[str, float]]] = {}
    models_out: list[dict[str, Any]] = []
    total = len(entries) * sum(min(s.count, cfg.max_images or s.count) for s in present)
    precisions: set[str] = set()
    with tqdm(total=total, unit="img", desc="evaluate") as bar, \
            closing(_scored(cfg, entries, present, bar)) as scored_models:
        for entry, results, precision in scored_models:
            precisions.add(precision)
            scored = _write_entry(entry, present, results, cfg, out, columns)
            all_rows += scored.rows
            per_model[entry.key] = scored.means
            run_id = entry.run_id
            if log_mlflow:
                run_id = mlflow_log.run_for(entry, tracking_uri, cfg.experiment)
                mlflow_log.log_model_results(
                    tracking_uri, run_id, entry, {s.name: s for s in present}, scored.means,
                    scored.grids, {f"evaluation/{scored.csv.name}": scored.csv})
            models_out.append({**entry.to_dict(), "run_id": run_id, "sets": scored.means})
    scored_counts = {s.name: sum(1 for r in all_rows if r["set"] == s.name) // len(entries)
                     for s in sets}
    summary = {
        "protocols": list(cfg.protocols),
        "precision": ", ".join(sorted(precisions)) or resolve_precision(cfg.precision,
                                                                         cfg.device),
        "tracking_uri": tracking_uri if log_mlflow else None,
        "sets": [{**asdict(s), "scored": scored_counts[s.name]} for s in sets],
        "models": models_out,
        "variants": aggregate(per_model, entries),
    }
    atomic_write_text(out / "per_image.csv", rows_to_csv(all_rows, columns))
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "report.md", render_report(summary))
    if log_mlflow:
        mlflow_log.log_report(tracking_uri, [m["run_id"] for m in models_out],
                              out / "report.md")
    return summary
