"""What the evaluate stage writes besides its summary: per-image CSVs, best/worst grids,
mean ± std over seeds, and one ``dvc metrics`` row per run and set."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ytmt.fileio import atomic_write_text, partial_dir, replace_dir


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for one value) of finite values."""
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "n": int(len(arr))}


def aggregate(per_model: dict[str, dict[str, dict[str, float]]],
              entries: list) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
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


def rows_to_csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


CASE_COLUMNS = ("input I", "estimated T", "estimated R", "true T")


def case_grid_png(cases: list, title: str) -> bytes:
    """Rows of input | T̂ | R̂ | T (``evaluate.Case``: uint8 images) with each row's name and
    PSNR of T, in the one grid of :func:`ytmt.grids.image_grid_png`."""
    from ytmt.grids import image_grid_png

    return image_grid_png([c.images for c in cases], CASE_COLUMNS, title,
                          row_labels=[f"{c.name}: {c.score:.2f} dB" for c in cases])


def write_dvc_metrics(models: list[dict[str, Any]], metrics_dir: str | Path) -> Path:
    """``metrics_dir/<set>/<variant>-seed<k>.json`` per model and present set: PSNR / SSIM of
    T̂ (paper protocol, else strict), the input's PSNR / SSIM; the same names as the training
    runs' validation rows, so ``dvc metrics show`` lists one short row per run and set. The
    folder is replaced as a whole (no rows left from runs or sets no longer evaluated)."""
    from ytmt.model_store import run_label

    final = Path(metrics_dir)
    tmp = partial_dir(final)
    try:
        for model in models:
            for set_name, m in model["sets"].items():
                row = _dvc_row(m)
                path = tmp / set_name / f"{run_label(model['variant'], model['seed'])}.json"
                atomic_write_text(path, json.dumps(row, indent=2) + "\n")
        replace_dir(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _dvc_row(means: dict[str, float]) -> dict[str, float]:
    """A short ``dvc metrics`` row (a 100-column terminal shows it): T̂ under the paper
    protocol (else the strict one) and the identity baseline (the input as T̂)."""
    suffix = "" if "psnr_t" in means else "_strict"
    return {f"psnr_t{suffix}": round(means[f"psnr_t{suffix}"], 3),
            f"ssim_t{suffix}": round(means[f"ssim_t{suffix}"], 4),
            "psnr_i": round(means["psnr_t_input"], 3),
            "ssim_i": round(means["ssim_t_input"], 4)}
