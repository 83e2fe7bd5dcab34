"""Evaluation fanned out over Ray workers (params ``evaluate.workers`` > 0).

The work is every model × every present set, each set cut into chunks of consecutive images
(:func:`plan_chunks`). ``workers`` Ray actors (:class:`Scorer`) take chunks as they come
free, each keeping the last model it loaded, and score them with the function the
single-process path uses (:func:`ytmt.evaluation.evaluate.evaluate_model_on_set`). The driver
takes the chunks back in order and hands each model's rows (in its sets' order) and
best/worst cases to the same writing and MLflow logging as the single-process path, so the
per-image CSVs, means, grids, ``dvc metrics`` rows and MLflow entries are the same.

Where the workers run: ``evaluate.ray_address`` (null: ``$RAY_ADDRESS``, else a local Ray of
at least the CPUs asked for). On a cluster, the model folders and sets must be at the same
paths on every node (the shared storage the training runs already need). Each worker holds
``cpus_per_worker`` CPUs and, with GPUs in the cluster (``use_gpu`` null or true),
``gpus_per_worker`` GPU; ``precision: auto`` resolves on the worker's own device (bf16 on a
GPU with bf16, fp32 on a CPU without native bf16) and the summary records what the workers
used. A request the cluster cannot hold is refused at once instead of waiting forever.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ytmt.config import ConfigError
from ytmt.evaluation.config import EvaluateConfig
from ytmt.evaluation.evaluate import (
    Case,
    Cases,
    EvalSet,
    ModelEntry,
    SetResult,
    evaluate_model_on_set,
    primitive_cache_env,
)
from ytmt.precision import resolve_precision

#: chunks per worker and set: small enough that workers finish together, large enough that
#: a chunk's start (list the set, decode the synthetic shards up to it) stays negligible
CHUNKS_PER_WORKER = 4


@dataclass(frozen=True)
class Chunk:
    """Images ``start`` to ``stop`` (None: the set's end) of set ``set_name`` for model
    ``entry`` (its position in the models' list)."""

    entry: int
    set_name: str
    start: int
    stop: int | None


@dataclass
class ChunkResult:
    """A chunk's per-image rows (in order), its best/worst candidates
    (:meth:`ytmt.evaluation.evaluate.Cases.candidates`) and the precision it ran in."""

    rows: list[dict[str, Any]]
    cases: list[Case]
    precision: str


def plan_chunks(entries: list[ModelEntry], present: list[EvalSet],
                cfg: EvaluateConfig) -> list[Chunk]:
    """Every model × present set, each set in up to ``CHUNKS_PER_WORKER × workers`` chunks of
    consecutive images, ordered by model, set, then image. The last chunk of a set runs to
    its end, so a set with more images than its recorded count is still scored whole."""
    chunks: list[Chunk] = []
    for i in range(len(entries)):
        for s in present:
            n = min(s.count, cfg.max_images or s.count)
            size = max(1, math.ceil(n / (CHUNKS_PER_WORKER * cfg.workers)))
            starts = list(range(0, n, size)) or [0]
            chunks += [Chunk(i, s.name, a, b)
                       for a, b in zip(starts, [*starts[1:], None], strict=True)]
    return chunks


class Scorer:
    """A Ray actor: scores chunks on ``device`` with ``threads`` torch threads, keeping the
    last model it loaded (chunks come ordered by model)."""

    def __init__(self, cfg: EvaluateConfig, entries: list[ModelEntry], sets: list[EvalSet],
                 device: str, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.cfg = dataclasses.replace(cfg, device=device)
        self.entries = entries
        self.sets = {s.name: s for s in sets}
        self.path: str | None = None
        self.model = None

    def score(self, chunk: Chunk) -> ChunkResult:
        from ytmt.checkpoint import model_from_checkpoint

        entry = self.entries[chunk.entry]
        if entry.path != self.path:
            self.model = None  # free the previous model before loading the next
            self.model = model_from_checkpoint(entry.path).to(self.cfg.device)
            self.path = entry.path
        rows, cases = evaluate_model_on_set(self.model, self.sets[chunk.set_name], self.cfg,
                                            start=chunk.start, stop=chunk.stop)
        return ChunkResult(rows, cases.candidates(),
                           resolve_precision(self.cfg.precision, self.cfg.device))


def worker_gpus(cfg: EvaluateConfig, resources: dict[str, float]) -> float:
    """GPUs per worker: ``gpus_per_worker`` where the cluster has GPUs and ``use_gpu`` is not
    false; ``use_gpu: true`` without a GPU in the cluster is an error."""
    if cfg.use_gpu is False:
        return 0.0
    if not resources.get("GPU"):
        if cfg.use_gpu:
            raise ConfigError("evaluate.use_gpu = true: the Ray cluster has no GPU")
        return 0.0
    return cfg.gpus_per_worker


def check_fits(cfg: EvaluateConfig, gpus: float, resources: dict[str, float]) -> None:
    """Refuse workers the cluster cannot hold all at once (they would wait forever)."""
    for name, key, each in (("CPU", "cpus_per_worker", cfg.cpus_per_worker),
                            ("GPU", "gpus_per_worker", gpus)):
        need, have = cfg.workers * each, resources.get(name, 0.0)
        if need > have:
            raise ConfigError(f"evaluate.workers × evaluate.{key} = {need:g} {name}s: the Ray "
                              f"cluster has {have:g} (ask for fewer workers or less each)")


def local_cpus(cfg: EvaluateConfig) -> int:
    """CPUs of a local Ray started for the workers: the machine's, or more (logical) when
    the workers ask for more, so they never wait for one another."""
    return max(os.cpu_count() or 1, math.ceil(cfg.workers * cfg.cpus_per_worker))


def score_models(cfg: EvaluateConfig, entries: list[ModelEntry], present: list[EvalSet],
                 bar) -> Iterator[tuple[ModelEntry, dict[str, SetResult], str]]:
    """Each model's results on every present set, in ``entries``' order, as the
    single-process path gives them: (entry, set name → (rows, cases), resolved precision).
    ``bar`` (tqdm) advances by each chunk's images. Starts or joins Ray
    (:func:`ytmt.ray_local.init_ray`); the workers are removed at the end, and a Ray this
    call started is shut down."""
    chunks = plan_chunks(entries, present, cfg)
    if not chunks:  # no present set: nothing to score, no Ray
        precision = resolve_precision(cfg.precision, cfg.device)
        yield from ((e, {}, precision) for e in entries)
        return
    import ray
    from ray.util import ActorPool

    from ytmt.ray_local import init_ray

    started = init_ray(cfg.ray_address, num_cpus=local_cpus(cfg))
    actors: list[Any] = []
    try:
        resources = ray.cluster_resources()
        gpus = worker_gpus(cfg, resources)
        check_fits(cfg, gpus, resources)
        device = "cuda" if gpus else cfg.device
        env = primitive_cache_env(cfg, device)
        threads = cfg.torch_threads or max(1, int(cfg.cpus_per_worker))
        remote = ray.remote(Scorer).options(
            num_cpus=cfg.cpus_per_worker, num_gpus=gpus,
            runtime_env={"env_vars": env} if env else None)
        actors = [remote.remote(cfg, entries, present, device, threads)
                  for _ in range(cfg.workers)]
        results = ActorPool(actors).map(lambda actor, c: actor.score.remote(c), chunks)
        for i, entry in enumerate(entries):
            yield entry, *_gather(results, [c for c in chunks if c.entry == i], present, cfg,
                                  bar)
    finally:
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()


def _gather(results: Iterator[ChunkResult], chunks: list[Chunk], present: list[EvalSet],
            cfg: EvaluateConfig, bar) -> tuple[dict[str, SetResult], str]:
    """One model's chunks, taken from ``results`` in order, joined per set: rows in the
    set's order, the cases offered in that order (the same ties as one pass)."""
    joined: dict[str, SetResult] = {s.name: ([], Cases(cfg.visual_cases)) for s in present}
    precisions = set()
    for chunk in chunks:
        bar.set_postfix_str(f"{chunk.set_name} {chunk.start}+")
        result = next(results)
        rows, cases = joined[chunk.set_name]
        rows += result.rows
        for case in result.cases:
            cases.add(case)
        precisions.add(result.precision)
        bar.update(len(result.rows))
    return joined, ", ".join(sorted(precisions))
