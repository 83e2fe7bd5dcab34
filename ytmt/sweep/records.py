"""What a sweep records, without Ray: its output files, its MLflow tags and one row per trial.

Ray-free on purpose: ``pipelines/tune.py`` writes the disabled sweep's records with it
without importing Ray, and the rules (a trial's status, the best trial) are tested on plain
rows. The driver (:mod:`ytmt.sweep.run`), the trials (:mod:`ytmt.sweep.trial`) and the
scheduler callback (:mod:`ytmt.sweep.recorder`) share its tag names.

Records, all written atomically into the stage's output folder:

- ``best.yaml``: ``variants`` (the variants the sweep searched for, which alone get the
  weights: :func:`read_best`) and ``weights`` (dotted loss keys → the values of the best
  trial, :func:`best_row`); ``{}`` when the sweep is disabled;
- ``trials.csv``: one row per trial (:func:`trial_row`): sampled weights, final and best
  metric, scheduler decision, MLflow run, Ray nodes;
- ``spread.json``: how far apart the trials are against the winner's spread over two run
  seeds (:func:`spread_report`);
- ``summary.json``: :class:`SweepResult` without the rows, written last.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ytmt.fileio import atomic_write_bytes

BEST_FILE, TRIALS_FILE, SUMMARY_FILE = "best.yaml", "trials.csv", "summary.json"
SPREAD_FILE = "spread.json"
TRIAL_TAG = "ytmt_tune_trial_id"
SWEEP_TAG = "ytmt_sweep_key"
ROLE_TAG = "ytmt_role"  # "sweep" on the parent run
DECISION_TAG = "tune_decision"  # completed | stopped_early | error
STOPPED_AT_TAG = "tune_stopped_at_epoch"
REPLICATE_TAG = "ytmt_replicate_seed"  # on the winner's replicate: its run seed
NODE_TAG = "ray_node_id"  # ray_node_id.trial (the trial driver), ray_node_id.rank<k>
TIME_ATTR = "epoch"  # the loop reports 1-based epochs; survives a resumed Train run
_TRIAL_DIR = re.compile(r"_([0-9a-f]{5}_[0-9]{5})_")  # run_trial_<exp>_<index>_<params>_<date>


class SweepError(RuntimeError):
    """The sweep cannot run (resources, storage) or a trial failed."""


class SweepInterrupted(SweepError):
    """The sweep stopped (Ctrl-C) with trials unfinished; running it again resumes it."""


@dataclass
class SweepResult:
    """What :func:`ytmt.sweep.run.run_sweep` wrote (also ``summary.json``)."""

    best_trial_id: str
    best_metric: float
    best: dict[str, float]
    metric: str
    mode: str
    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    experiment_path: str
    sweep_key: str
    restored: bool
    trials: list[dict[str, Any]]
    variants: list[str]  # the variants best applies to (the one searched for)
    best_input: float | None = None  # the winner's metric of the input as T̂ (the identity)
    spread: dict[str, Any] | None = None  # spread_report (None: no replicate)


def find_child_run(client, experiment_id: str, parent_run_id: str, trial_id: str):
    """The MLflow run of trial ``trial_id`` under the sweep's parent run (None if absent)."""
    from ytmt.tracking import tags_filter

    runs = client.search_runs(
        [experiment_id],
        filter_string=tags_filter({"mlflow.parentRunId": parent_run_id, TRIAL_TAG: trial_id}),
        order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


# --------------------------------------------------------------------------- trial rows

def trial_id_of(metrics: Mapping[str, Any], path: str | None) -> str:
    """A trial's id from its last reported metrics, else from its folder name (a trial that
    never reported), else ``"?"``."""
    found = _TRIAL_DIR.search(Path(path).name) if path else None
    return metrics.get("trial_id") or (found.group(1) if found else "?")


def trial_status(errored: bool, epochs_run: int, epochs: int, decision: str) -> str:
    """``error``, ``completed`` (ran every epoch), ``stopped_early`` (the scheduler's decision
    tag says so) or ``unfinished`` (Tune also lists the trials an interrupted sweep had not
    finished as terminated)."""
    if errored:
        return "error"
    if epochs_run >= epochs:
        return "completed"
    return "stopped_early" if decision == "stopped_early" else "unfinished"


def trial_row(trial_id: str, *, epochs_run: int, epochs: int, values: Sequence[float],
              config: Mapping[str, Any], tags: Mapping[str, str], run_id: str,
              error: str | None, space_keys: Sequence[str], metric: str,
              mode: str) -> dict[str, Any]:
    """One ``trials.csv`` row: ``values`` is the trial's per-epoch ``metric``, ``config`` its
    sampled weights, ``tags`` its MLflow run's tags, ``error`` Tune's error (None: none)."""
    status = trial_status(error is not None, epochs_run, epochs, tags.get(DECISION_TAG, ""))
    nodes = sorted({v for k, v in tags.items() if k.startswith(f"{NODE_TAG}.rank")})
    best = (max(values) if mode == "max" else min(values)) if values else float("nan")
    return {
        "trial_id": trial_id, "status": status, "stopped_early": status == "stopped_early",
        "epochs_run": epochs_run, "scheduler_decision": tags.get(DECISION_TAG, ""),
        "stopped_at_epoch": tags.get(STOPPED_AT_TAG, ""),
        metric: values[-1] if values else float("nan"), f"{mode}_{metric}": best,
        **{k: float(config[k]) if k in config else float("nan") for k in space_keys},
        "mlflow_run_id": run_id, "train_nodes": " ".join(nodes),
        "trial_node": tags.get(f"{NODE_TAG}.trial", ""),
        "error": (error.splitlines() or ["error"])[0][:300] if error is not None else "",
    }


def best_row(rows: list[dict[str, Any]], metric: str, mode: str) -> dict[str, Any]:
    """The trial with the best final-epoch ``metric`` among the trials that ran all their
    epochs (ties: the lowest trial id). A trial the scheduler stopped early is judged at an
    earlier epoch than the rest, so it only competes when no trial completed."""
    ok = [r for r in rows if r["status"] != "error" and not math.isnan(r[metric])]
    if not ok:
        errors = "; ".join(f"{r['trial_id']}: {r['error'] or 'no ' + metric}" for r in rows)
        raise SweepError(f"no trial reported {metric}: {errors}")
    ok = [r for r in ok if r["status"] == "completed"] or ok
    sign = 1.0 if mode == "max" else -1.0
    return max(ok, key=lambda r: (sign * r[metric], [-ord(ch) for ch in r["trial_id"]]))


def check_finished(rows: list[dict[str, Any]], n_trials: int, out: str | Path,
                   experiment_path: str) -> None:
    """Raise :class:`SweepInterrupted` when trials are missing or unfinished, and
    :class:`SweepError` (after writing ``trials.csv``) when some failed."""
    out = Path(out)
    unfinished = sum(r["status"] == "unfinished" for r in rows) + n_trials - len(rows)
    if unfinished > 0:
        raise SweepInterrupted(
            f"sweep interrupted with {unfinished} of {n_trials} trial(s) unfinished; run "
            f"the same command again to resume it (state: {experiment_path})")
    failed = [r for r in rows if r["status"] == "error"]
    if failed:
        atomic_write_bytes(out / TRIALS_FILE, trials_csv(rows))
        raise SweepError(
            f"{len(failed)} of {len(rows)} trial(s) failed ("
            + "; ".join(f"{r['trial_id']}: {r['error']}" for r in failed)
            + f"); see {out / TRIALS_FILE} and the trials' error files under "
            f"{experiment_path}. Running again retries them.")


# --------------------------------------------------------------------------- spread

def spread_report(histories: Mapping[str, Sequence[float]], best_trial_id: str,
                  replicate: Sequence[float] | None, seeds: tuple[int, int],
                  metric: str) -> dict[str, Any]:
    """How far apart the trials are against one config's spread over two run seeds.

    ``histories``: each finished trial's per-epoch ``metric`` (epoch 1 first); ``replicate``:
    the best trial's config trained again with run seed ``seeds[1]`` (``seeds[0]`` is the
    trials'). Both spreads are taken at the last epoch every trial reached (a trial the
    scheduler stopped reached fewer), so they compare like with like: ``trial_spread`` =
    max - min over the trials, ``seed_spread`` = |best trial - replicate|. The sweep can
    tell its trials apart (``distinguishable``) when the first exceeds the second."""
    epoch = min(len(v) for v in histories.values())
    if epoch < 1 or (replicate is not None and len(replicate) < epoch):
        raise SweepError(f"spread: a trial or the replicate reported no {metric} at epoch "
                         f"{max(epoch, 1)}")
    at = {t: float(v[epoch - 1]) for t, v in sorted(histories.items())}
    trial_spread = max(at.values()) - min(at.values())
    report: dict[str, Any] = {"metric": metric, "epoch": epoch, "trials": at,
                              "trial_spread": trial_spread}
    if replicate is not None:
        values = {str(seeds[0]): at[best_trial_id], str(seeds[1]): float(replicate[epoch - 1])}
        seed_spread = abs(values[str(seeds[0])] - values[str(seeds[1])])
        report.update(best_trial_id=best_trial_id, seed_values=values, seed_spread=seed_spread,
                      distinguishable=trial_spread > seed_spread)
    return report


def spread_line(report: Mapping[str, Any]) -> str:
    """The console's sentence for a :func:`spread_report`."""
    m, e = report["metric"], report["epoch"]
    line = (f"[tune] at epoch {e} the {len(report['trials'])} trial(s) span "
            f"{report['trial_spread']:.3f} of {m}")
    if "seed_spread" not in report:
        return line + " (no replicate: tune.replicate is false)"
    seeds = " and ".join(report["seed_values"])
    verdict = "can" if report["distinguishable"] else "cannot"
    return (f"{line}; the winner over run seeds {seeds} spans {report['seed_spread']:.3f}: "
            f"the sweep {verdict} tell its trials apart")


# --------------------------------------------------------------------------- best.yaml

def best_yaml(variants: Sequence[str], weights: Mapping[str, float]) -> bytes:
    """``best.yaml``'s content: the variants searched for and the winner's weights."""
    return yaml.safe_dump({"variants": list(variants), "weights": dict(weights)},
                          sort_keys=True).encode()


def read_best(path: str | Path, variant: str) -> tuple[dict[str, Any], list[str]]:
    """(the weights of ``best.yaml`` that apply to ``variant``, the variants they were
    searched for): ``{}`` for a variant the sweep did not search for, and for a disabled
    sweep's ``{}``. :class:`ConfigError` for a missing or malformed file."""
    from ytmt.config import ConfigError

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: best configuration file not found (run the tune stage)")
    data = yaml.safe_load(path.read_text()) or {}
    if data == {}:
        return {}, []
    variants, weights = (data.get("variants"), data.get("weights")) \
        if isinstance(data, dict) else (None, None)
    if (set(data) != {"variants", "weights"} or not isinstance(variants, list)
            or not isinstance(weights, dict)
            or not all(isinstance(k, str) and "." in k for k in weights)):
        raise ConfigError(f"{path}: expected {{variants: [<variant>, ...], weights: "
                          f"{{<dotted key>: <value>}}}} (written by the tune stage; run it "
                          f"again); got {data!r}")
    return (dict(weights) if variant in variants else {}), list(variants)


# --------------------------------------------------------------------------- files

def trials_csv(rows: list[dict[str, Any]]) -> bytes:
    """``trials.csv``: a header from the first row's keys (``trial_id,status`` when none)."""
    buf = io.StringIO()
    fields = list(rows[0]) if rows else ["trial_id", "status"]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


def write_disabled(out_dir: str | Path) -> Path:
    """``tune.enabled: false``: an empty ``best.yaml`` (the train stage keeps params.yaml's
    weights), a header-only ``trials.csv``, an empty ``spread.json`` and ``summary.json``
    saying so. No Ray."""
    out = Path(out_dir)
    atomic_write_bytes(out / BEST_FILE, b"{}\n")
    atomic_write_bytes(out / TRIALS_FILE, trials_csv([]))
    atomic_write_bytes(out / SPREAD_FILE, b"{}\n")
    atomic_write_bytes(out / SUMMARY_FILE, json.dumps(
        {"enabled": False, "best_trial_id": None, "best_metric": None, "best": {},
         "parent_run_id": None}, indent=2).encode())
    return out / BEST_FILE


def write_outputs(out_dir: str | Path, result: SweepResult) -> None:
    """``trials.csv``, ``best.yaml``, ``spread.json``, then ``summary.json`` (last: its
    presence means the others are complete)."""
    out = Path(out_dir)
    atomic_write_bytes(out / TRIALS_FILE, trials_csv(result.trials))
    atomic_write_bytes(out / BEST_FILE, best_yaml(result.variants, result.best))
    atomic_write_bytes(out / SPREAD_FILE, json.dumps(result.spread or {}, indent=2).encode())
    summary = {"enabled": True, **dataclasses.asdict(result)}
    summary.pop("trials")
    summary["num_trials"] = len(result.trials)
    summary["stopped_early"] = [r["trial_id"] for r in result.trials if r["stopped_early"]]
    atomic_write_bytes(out / SUMMARY_FILE, json.dumps(summary, indent=2, default=str).encode())
