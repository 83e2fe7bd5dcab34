"""params.yaml section ``train`` (the sweep's ``tune`` is :mod:`ytmt.sweep.config`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ytmt.config import ConfigError, bounded
from ytmt.precision import Precision

Backend = Literal["auto", "gloo", "nccl"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
CompileBackend = Literal["inductor", "aot_eager", "cudagraphs", "eager"]

# train keys that change no trained weights, so neither the DVC train stages (their params
# are the other keys: tests/test_dvc_deps.py) nor the resume key depend on them: which runs
# exist, how a run is logged or stored, and how it executes (same math, other speed).
RUN_SELECTION = ("variants", "seeds", "two_stage")
REPORTING = ("log_every_steps", "sample_every", "sample_count", "checkpoint_every",
             "storage_path", "experiment", "tracking_uri")
EXECUTION = ("channels_last", "compile", "compile_mode", "compile_backend", "fuse_streams",
             "loader_workers", "torch_threads", "use_gpu", "cpus_per_worker", "gpus_per_worker",
             "backend", "max_failures", "min_workers")
NOT_RECIPE = RUN_SELECTION + REPORTING + EXECUTION
# train.loader_workers null: DataLoader processes per Ray worker with a GPU (0 on CPU, where
# they would compete with the worker's own threads for its cores)
AUTO_LOADER_WORKERS_PER_GPU = 4


@dataclass(frozen=True)
class TwoStageRun:
    """A two-stage variant and the single-stage variant whose trained model (of the same
    seed) is its frozen stage 1, e.g. ``{variant: ytmt-uct, stage1: ytmt-ucs}``."""

    variant: str
    stage1: str


@dataclass(frozen=True)
class Run:
    """One training run: ``variant`` with run seed ``seed``; ``stage1`` names the
    single-stage variant of a two-stage run (None otherwise)."""

    variant: str
    seed: int
    stage1: str | None = None


@dataclass(frozen=True)
class TrainConfig:
    """Training recipe and how it is distributed (params.yaml ``train``).

    Defaults run in minutes on a 2-core CPU. The paper's recipe: ``epochs: 120``,
    ``lr: 1.0e-4``, ``lr_milestones: [60, 80, 100]``, ``lr_gamma: 0.5``, ``crop: 224``,
    ``gan: true`` (with ``model.width: 64``). The learning rate is a pure function of the
    epoch (:func:`ytmt.train.loop.learning_rate`).

    Runs: every single-stage variant in ``variants`` and every two-stage one in
    ``two_stage`` is trained once per ``seeds`` entry, and that entry is the run's seed
    (model initialisation, crops, augmentation and data order); the top-level ``seed`` keeps
    seeding data synthesis and the tune sweep only. Each run is a DVC stage of its own
    (``train@<variant>-<seed>``, ``train2@...``) writing ``<variant>/seed<k>/`` (see
    :mod:`ytmt.model_store`), so adding a seed or a variant trains only the new runs; the
    evaluation reports mean ± std over seeds. A two-stage run starts from the stage-1 run of
    its seed, whose variant must be listed in ``variants``.

    Distribution: ``num_workers`` Ray Train workers (DDP, ``batch_size`` images each, so
    the global batch is ``num_workers * batch_size``); ``0`` runs the loop in the calling
    process (no Ray workers, no fault tolerance: unit tests, debugging). ``min_workers``
    (null: a fixed group) makes the group elastic: after a node is lost the run restarts
    from its last checkpoint on as few as ``min_workers`` workers (and grows back when
    resources return). The per-worker batch stays ``batch_size``, so the global batch is
    then ``world_size * batch_size``; each epoch's record logs its ``world_size``.
    ``backend: auto`` is gloo on CPU and nccl with GPUs. ``storage_path`` holds Ray's
    checkpoints; it must be shared by all nodes on a cluster (null: ``$YTMT_RAY_STORAGE`` or
    ``<cwd>/outputs/ray_results``). ``tracking_uri`` null: ``$MLFLOW_TRACKING_URI`` or the
    local SQLite store (:mod:`ytmt.tracking`).

    Speed: ``precision: bf16`` runs the generator, the losses and the discriminator under
    bf16 autocast (weights, optimiser state, checkpoints and validation stay fp32); ``auto``
    (the default) is bf16 where the device computes it natively (a CUDA GPU with bf16, a CPU
    with AVX-512 BF16 or AMX) and fp32 elsewhere (:mod:`ytmt.precision`); the resolved value
    is logged as ``precision_used``. ``channels_last`` stores weights and batches NHWC;
    ``compile`` wraps the (DDP) model and the loss in
    ``torch.compile(backend=compile_backend, mode=compile_mode)`` (the modes are inductor's;
    ``aot_eager`` traces forward and backward without generating code, a quick way to check
    that a model compiles); ``fuse_streams`` runs the two streams' 3×3 convs of each block
    as one grouped conv (same parameters and checkpoints). ``bench/bench_step.py`` and
    ``bench/bench_train.py`` measure each (docs/training.md). ``tf32`` lets fp32 matmuls and
    convolutions on CUDA use TF32 (results change slightly, so it is part of the recipe;
    nothing on CPU). ``loader_workers`` null: 0 on CPU, :data:`AUTO_LOADER_WORKERS_PER_GPU`
    DataLoader processes per GPU worker. ``checkpoint_every``: epochs between checkpoints
    (the last epoch is always checkpointed).
    """

    variants: tuple[str, ...] = ("ytmt-ucs",)
    seeds: tuple[int, ...] = bounded((0,), ge=0)
    two_stage: tuple[TwoStageRun, ...] = ()
    epochs: int = bounded(6, ge=1)
    batch_size: int = bounded(4, ge=1)
    crop: int = bounded(64, ge=16)
    max_steps_per_epoch: int | None = bounded(None, ge=1)
    # data mix (ytmt.data.reader.ShardDataset): real pairs' share of the training samples
    # (the authors' FusionDataset ratio; 0 when the shards hold no real pairs) and whether
    # each epoch reads the stored mixtures or composes fresh ones from the stored photos
    real_share: float = bounded(0.3, ge=0.0, le=1.0)
    mixtures: Literal["stored", "fresh"] = "stored"
    # optimiser and schedule
    lr: float = bounded(1e-3, gt=0.0)
    betas: tuple[float, ...] = bounded((0.9, 0.999), ge=0.0, lt=1.0)
    adam_eps: float = bounded(1e-8, gt=0.0)
    lr_milestones: tuple[int, ...] = bounded((4,), ge=1)
    lr_gamma: float = bounded(0.25, gt=0.0, le=1.0)
    gan: bool = False
    discriminator_width: int = bounded(64, ge=1)
    # speed: mixed precision, memory format, torch.compile
    precision: Precision = "auto"
    channels_last: bool = False
    compile: bool = False
    compile_mode: CompileMode = "default"
    compile_backend: CompileBackend = "inductor"
    fuse_streams: bool = False
    tf32: bool = False
    # reporting
    log_every_steps: int = bounded(10, ge=1)
    sample_every: int = bounded(2, ge=1)
    sample_count: int = bounded(4, ge=1)
    checkpoint_every: int = bounded(1, ge=1)
    # data loading and threads inside each worker
    loader_workers: int | None = bounded(None, ge=0)
    torch_threads: int | None = bounded(None, ge=1)
    # Ray Train
    num_workers: int = bounded(2, ge=0)
    min_workers: int | None = bounded(None, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = bounded(0.5, gt=0.0)
    gpus_per_worker: float = bounded(1.0, gt=0.0)
    backend: Backend = "auto"
    max_failures: int = bounded(1, ge=-1)
    storage_path: str | None = None
    # MLflow
    experiment: str = "ytmt-train"
    tracking_uri: str | None = None

    def validate(self) -> None:
        from ytmt.variants import VARIANTS

        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ConfigError(f"variants = {list(self.variants)!r}: unknown {unknown[0]!r}; "
                              f"known: {', '.join(VARIANTS)}")
        if not self.variants:
            raise ConfigError("variants: list at least one variant")
        if len(set(self.variants)) != len(self.variants):
            raise ConfigError(f"variants = {list(self.variants)!r}: a variant is listed twice")
        self._validate_two_stage()
        if not self.seeds:
            raise ConfigError("seeds: list at least one seed, e.g. [0]")
        repeated = sorted({s for s in self.seeds if self.seeds.count(s) > 1})
        if repeated:
            raise ConfigError(f"seeds = {list(self.seeds)!r}: seed {repeated[0]} is listed "
                              "more than once; each seed trains one model per variant")
        if len(self.betas) != 2:
            raise ConfigError(f"betas = {list(self.betas)!r}: expected two numbers (β1, β2)")
        if list(self.lr_milestones) != sorted(set(self.lr_milestones)):
            raise ConfigError(f"lr_milestones = {list(self.lr_milestones)!r}: expected "
                              "strictly increasing epochs")
        compile_set = {k: v for k, v in (("compile_mode", self.compile_mode),
                                         ("compile_backend", self.compile_backend))
                       if v != getattr(TrainConfig, k)}
        if compile_set and not self.compile:
            key = next(iter(compile_set))
            raise ConfigError(f"{key} = {compile_set[key]!r} has no effect with compile: "
                              f"false; set compile: true (or drop {key})")
        if self.compile_mode != "default" and self.compile_backend != "inductor":
            raise ConfigError(f"compile_mode = {self.compile_mode!r} is an inductor mode; "
                              f"compile_backend is {self.compile_backend!r}")
        if self.min_workers is not None and not 1 <= self.min_workers <= self.num_workers:
            raise ConfigError(f"min_workers = {self.min_workers}: must be between 1 and "
                              f"num_workers ({self.num_workers}), or null for a fixed group")
        if self.backend == "nccl" and not self.use_gpu:
            raise ConfigError("backend = 'nccl' needs use_gpu: true (use gloo or auto on CPU)")

    def _validate_two_stage(self) -> None:
        from ytmt.variants import VARIANTS

        for v in self.variants:
            if VARIANTS[v].stages > 1:
                first = VARIANTS[v].stage1_variant
                raise ConfigError(
                    f"variants: {v!r} is two-stage; list it under two_stage as "
                    f"{{variant: {v}, stage1: {first}}} (and {first} under variants)")
        for i, run in enumerate(self.two_stage):
            key = f"two_stage[{i}]"
            spec = VARIANTS.get(run.variant)
            if spec is None or spec.stages == 1:
                two = [n for n, v in VARIANTS.items() if v.stages > 1]
                raise ConfigError(f"{key}.variant = {run.variant!r}: expected a two-stage "
                                  f"variant ({', '.join(two)})")
            if run.stage1 != spec.stage1_variant:
                raise ConfigError(f"{key}.stage1 = {run.stage1!r}: the stage 1 of "
                                  f"{run.variant} is {spec.stage1_variant!r}")
            if run.stage1 not in self.variants:
                raise ConfigError(f"{key}: stage 1 {run.stage1!r} must be trained too: add it "
                                  f"to variants")
        names = [r.variant for r in self.two_stage]
        if len(set(names)) != len(names):
            raise ConfigError(f"two_stage: a variant is listed twice ({names})")

    def resolved_loader_workers(self, device_type: str) -> int:
        """``loader_workers``, with null resolved for a worker on ``device_type``."""
        if self.loader_workers is not None:
            return self.loader_workers
        return AUTO_LOADER_WORKERS_PER_GPU if device_type == "cuda" else 0

    def runs(self) -> list[Run]:
        """Every (variant, seed) run in training order: single-stage runs first, then the
        two-stage runs (each after its stage 1)."""
        single = [Run(v, s) for v in self.variants for s in self.seeds]
        return single + [Run(r.variant, s, r.stage1) for r in self.two_stage
                         for s in self.seeds]

    def recipe(self) -> dict[str, Any]:
        """The keys that determine a run's trained weights (all but :data:`NOT_RECIPE`)."""
        from ytmt.config import to_dict

        return {k: v for k, v in to_dict(self).items() if k not in NOT_RECIPE}
