"""What a training run shows besides its console lines (:mod:`ytmt.progress`): loss curves,
per-epoch tables and the DVC metrics and plots files (the sample grid:
:func:`ytmt.grids.image_grid_png`).

Everything here runs on rank 0 (or the driver) only and writes files atomically
(temporary name, then rename), so an interrupted run never leaves half a PNG or CSV.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

from ytmt.fileio import atomic_write_bytes

CURVE_KEYS = ("train_loss", "loss_rec", "loss_perceptual", "loss_exclusion", "loss_adversarial")


def curves_png(history: Sequence[Mapping[str, float]], title: str = "") -> bytes:
    """Loss terms (log scale) and validation PSNR of T̂ and R̂ against the epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_psnr) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key in CURVE_KEYS:
        values = [h.get(key, 0.0) for h in history]
        if any(v > 0 for v in values):
            ax_loss.plot(epochs, values, marker="o", label=key)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss (mean over the epoch)")
    ax_loss.legend(fontsize=7)
    for key, label in (("val_psnr_t", "T̂"), ("val_psnr_r", "R̂"),
                       ("val_psnr_t_input", "input as T̂ (identity)")):
        if all(key in h for h in history):
            ax_psnr.plot(epochs, [h[key] for h in history], marker="o", label=label)
    ax_psnr.set_xlabel("epoch")
    ax_psnr.set_ylabel("validation PSNR (dB, paper protocol)")
    ax_psnr.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def write_history_csv(path: str | Path, history: Sequence[Mapping[str, float]]) -> Path:
    """One row per epoch, columns = the union of metric names (``epoch`` first)."""
    keys = ["epoch"] + sorted({k for h in history for k in h} - {"epoch"})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for h in history:
        writer.writerow({k: h.get(k, "") for k in keys})
    return atomic_write_bytes(path, buf.getvalue().encode())


def run_metrics(record: Mapping[str, float]) -> dict[str, float]:
    """The few numbers of a run that ``dvc metrics show`` lists, one row per run, under the
    same names as the evaluation's per-set rows (``ytmt.evaluation.outputs``): PSNR / SSIM of
    T̂ (paper protocol), the input's PSNR / SSIM (the identity baseline) and the training
    speed."""
    out = {"psnr_t": round(record["val_psnr_t"], 3), "ssim_t": round(record["val_ssim_t"], 4),
           "psnr_i": round(record["val_psnr_t_input"], 3),
           "ssim_i": round(record["val_ssim_t_input"], 4)}
    if "images_per_s" in record:
        out["img_s"] = round(record["images_per_s"], 2)
    return out


PLOT_COLUMNS = {"val_psnr": ("epoch", "val_psnr_t", "val_psnr_t_input"),
                "train_loss": ("epoch", "train_loss", "loss_rec", "loss_perceptual",
                               "loss_exclusion", "loss_adversarial")}


def write_run_outputs(label: str, history: Sequence[Mapping[str, float]],
                      metrics_path: str | Path, plots_dir: str | Path) -> list[Path]:
    """DVC outputs of one training run ``label`` (``<variant>-seed<k>``): ``metrics_path``
    (:func:`run_metrics` of the last epoch), ``plots_dir/val_psnr/<label>.csv`` and
    ``plots_dir/train_loss/<label>.csv`` (one row per epoch; dvc.yaml's top-level plots draw
    them against ``epoch``) and ``plots_dir/curves/<label>.png``. Returns the paths."""
    import json

    plots_dir = Path(plots_dir)
    written = [atomic_write_bytes(metrics_path,
                                  (json.dumps(run_metrics(history[-1]), indent=2) + "\n")
                                  .encode())]
    for name, columns in PLOT_COLUMNS.items():
        rows = [{k: h[k] for k in columns if k in h} for h in history]
        written.append(write_history_csv(plots_dir / name / f"{label}.csv", rows))
    written.append(atomic_write_bytes(plots_dir / "curves" / f"{label}.png",
                                      curves_png(history, label)))
    return written
