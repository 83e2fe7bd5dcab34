"""``ytmt import-authors``: the authors' released two-stage SIRS model as a ytmt model.

The released file (``ytmt_uct_sirs_68_077_00595364.pt``, linked from mingcv/YTMT-Strategy's
README) is a plain ``torch.save`` of a dict::

    {"icnn": <stage 1 state dict>, "icnn2": <stage 2 state dict; absent: stage 2 = icnn>,
     "epoch": 68, "iterations": 595364}

whose state dicts are the authors' legacy ``YTMTUNet`` (``--inet ytmt_ucs_old``), ported as
:class:`ytmt.archs.released.ReleasedUNet` (variant ``ytmt-uct-released``). The importer
loads it with ``weights_only=True``, maps every key through :data:`AUTHORS_TO_OURS` and checks
every shape before anything is built, adds ImageNet VGG-19 (hash-checked; never random
weights), and writes into ``--out``:

- ``model.pt``: a normal ytmt checkpoint (:mod:`ytmt.checkpoint`), VGG included, usable by
  ``ytmt separate --model``, the evaluate stage (params ``evaluate.imported``) and serving;
- ``info.json``: the source file's name, SHA-256 and size, ``epoch``, ``iterations``, the
  VGG file, and the MLflow run / model URI / registered version when ``--register`` is given.

Nothing is half-written: ``--out`` is built in a hidden sibling folder and swapped in at the
end; a registration made before a later failure is undone.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ytmt.model_store import ModelInfo, read_info, write_info

VARIANT = "ytmt-uct-released"
DEFAULT_ALIAS = "authors-uct"
KIND = "authors-import"
EXPERIMENT = "ytmt-import"
HYPERCOLUMN_CHANNELS = 1475
RELEASED_WIDTH = 64
Progress = Callable[[str], None]


# --------------------------------------------------------------------------- the key table

def _attention(pixel: str, channel: str, ours: str) -> dict[str, str]:
    """Their PALayer/CALayer Sequential indices → our PostAttention names."""
    return {f"{pixel}.pa.0": f"{ours}.pixel_att.reduce",
            f"{pixel}.pa.2": f"{ours}.pixel_att.expand",
            f"{channel}.ca.0": f"{ours}.channel_att.reduce",
            f"{channel}.ca.2": f"{ours}.channel_att.expand"}


# Per block: their sub-module → ours; ``{s}`` is our stream letter (their suffix _1 = t, _2 = r).
_IN = {"fusion": "idle_exchange.{s}", "model.0": "conv.conv.{s}.conv",
       **_attention("model.1", "model.2", "conv.att_{s}")}
_DOWN = {"fusion": "exchange.{s}", "model.1": "conv.conv.{s}.conv",  # model.0 is the max-pool
         **_attention("model.2", "model.3", "conv.att_{s}")}
_UP = {"fusion_1": "exchange_deep.{s}", "fusion_2": "exchange_skip.{s}",
       "model.0": "conv.conv.{s}.conv", **_attention("model.1", "model.2", "conv.att_{s}")}
_OUT = {"fusion": "exchange.{s}", "conv": "out.conv_{s}"}
_BLOCKS = [("inc", "inc", _IN),
           *((f"down{k}", f"down{k}", _DOWN) for k in range(1, 5)),
           *((f"up{k}", f"up{k}", _UP) for k in range(1, 5)),
           ("outc", "out", _OUT)]
_STREAMS = (("1", "t"), ("2", "r"))

#: Every parameter of the authors' YTMTUNet state dict → its name in ReleasedUNet.
AUTHORS_TO_OURS: dict[str, str] = {
    f"{theirs}_{n}.{sub}.{p}": f"{ours}.{target.format(s=s)}.{p}"
    for theirs, ours, table in _BLOCKS for n, s in _STREAMS
    for sub, target in table.items() for p in ("weight", "bias")}


# --------------------------------------------------------------------------- reading

@dataclass(frozen=True)
class SourceFile:
    """The released file as recorded in info.json."""

    file: str
    path: str
    sha256: str
    bytes: int
    stage2_from: str  # "icnn2", or "icnn" when the file has no separate stage 2
    epoch: int | None
    iterations: int | None
    width: int


def _shape(t: Any) -> tuple[int, ...]:
    return tuple(t.shape)


def expected_shapes(width: int) -> dict[str, tuple[int, ...]]:
    """Their key → the shape ReleasedUNet(1475, width) expects (built on the meta device)."""
    from ytmt.archs.released import ReleasedUNet

    with torch.device("meta"):
        ours = ReleasedUNet(HYPERCOLUMN_CHANNELS, width).state_dict()
    return {theirs: _shape(ours[mine]) for theirs, mine in AUTHORS_TO_OURS.items()}


def map_state_dict(state: Any, where: str) -> dict[str, Tensor]:
    """The authors' stage state dict ``state`` → ours, every key and shape checked.
    ``where`` ("FILE: icnn") starts each error message."""
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{where}: not a state dict of tensors (got {type(state).__name__})")
    first = state.get("inc_1.model.0.weight")
    width = first.shape[0] if first is not None and first.dim() == 4 else RELEASED_WIDTH
    shapes = expected_shapes(width)
    unexpected = sorted(set(state) - set(shapes))
    if unexpected:
        raise ValueError(f"{where}: unexpected key {unexpected[0]!r} ({len(unexpected)} in all): "
                         "not the authors' YTMTUNet (--inet ytmt_ucs_old)")
    for key, shape in shapes.items():
        if key not in state:
            raise ValueError(f"{where}: missing key {key!r} (expected shape {shape})")
        if _shape(state[key]) != shape:
            raise ValueError(f"{where}: {key!r} has shape {_shape(state[key])}, expected "
                             f"{shape} (width {width}, {HYPERCOLUMN_CHANNELS} input channels)")
        if not state[key].is_floating_point():
            raise ValueError(f"{where}: {key!r} has dtype {state[key].dtype}, expected floats")
    return {AUTHORS_TO_OURS[k]: v.float() for k, v in state.items()}


def _optional_int(raw: dict[str, Any], key: str, path: Path) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{path}: {key!r} = {value!r}: expected an integer")
    return value


def read_released(path: str | Path) -> tuple[SourceFile, dict[str, Tensor], dict[str, Tensor]]:
    """(what to record, stage 1 state dict, stage 2 state dict) in our names; one-line
    errors for truncated, unsafe or foreign files, missing keys and wrong shapes."""
    from ytmt.checkpoint import load_weights_only
    from ytmt.fileio import file_digest

    path = Path(path)
    raw = load_weights_only(path)
    if not isinstance(raw, dict) or "icnn" not in raw:
        found = sorted(map(str, raw))[:6] if isinstance(raw, dict) else type(raw).__name__
        raise ValueError(f"{path}: missing key 'icnn' (the stage 1 state dict of the authors' "
                         f"released file); found {found}")
    stage1 = map_state_dict(raw["icnn"], f"{path}: icnn")
    stage2_from = "icnn2" if "icnn2" in raw else "icnn"
    stage2 = map_state_dict(raw[stage2_from], f"{path}: {stage2_from}")
    width = stage1["inc.conv.conv.t.conv.weight"].shape[0]
    if stage2["inc.conv.conv.t.conv.weight"].shape[0] != width:
        raise ValueError(f"{path}: icnn and icnn2 have different widths")
    source = SourceFile(file=path.name, path=str(path.resolve()), sha256=file_digest(path),
                        bytes=path.stat().st_size, stage2_from=stage2_from,
                        epoch=_optional_int(raw, "epoch", path),
                        iterations=_optional_int(raw, "iterations", path), width=int(width))
    return source, stage1, stage2


def load_imagenet_vgg(vgg_path: str | Path | None):
    """ImageNet VGG-19 from ``vgg_path`` (or the usual places, see ytmt.archs.vgg), verified
    by the SHA-256 prefix in its file name; a file whose name carries none is refused."""
    from ytmt.archs.vgg import (
        VGG19_FILE,
        VGGWeightsMissing,
        candidate_paths,
        find_vgg19_file,
        hash_prefix,
        load_vgg19,
    )

    found = find_vgg19_file(vgg_path)
    if found is None:
        where = ", ".join(map(str, candidate_paths(vgg_path)))
        raise VGGWeightsMissing(f"an imported model needs ImageNet VGG-19 ({VGG19_FILE}); "
                                f"not found (looked at: {where}); pass --vgg-path")
    if hash_prefix(found) is None:
        raise ValueError(f"{found}: cannot verify this VGG-19 file: its name carries no "
                         f"SHA-256 prefix; keep torchvision's name {VGG19_FILE}")
    return load_vgg19("imagenet", found)


def build_imported(source: SourceFile, stage1: dict[str, Tensor], stage2: dict[str, Tensor],
                   vgg) -> Any:
    """The SeparationModel of ``VARIANT`` holding the released weights (eval mode)."""
    from ytmt.archs.build import build_model

    model = build_model(VARIANT, width=source.width, vgg=vgg)
    model.stage1.load_state_dict(stage1)
    model.stage2.load_state_dict(stage2)
    return model.eval()


# --------------------------------------------------------------------------- registry

@dataclass
class Registration:
    """What ``--register`` created, so that a later failure can take it back."""

    tracking_uri: str
    name: str
    alias: str
    run_id: str | None = None
    model_uri: str | None = None
    version: int | None = None
    created_model: bool = False

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{self.alias}"

    def undo(self) -> None:
        """Delete what was created: the version, the registered model if this import created
        it, the logged model and the run (best effort: the original error is what counts)."""
        c = _clients(self.tracking_uri)
        if self.version is not None:
            _quietly(c.delete_model_version, self.name, str(self.version))
        if self.created_model:
            _quietly(c.delete_registered_model, self.name)
        if self.model_uri is not None:
            _quietly(c.delete_logged_model, self.model_uri.rsplit("/", 1)[-1])
        if self.run_id is not None:
            _quietly(c.delete_run, self.run_id)


def _quietly(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:  # noqa: BLE001 - clean-up after another error; that error is raised
        pass


def _version_tags(source: SourceFile, model_uri: str) -> dict[str, str]:
    from ytmt.evaluation.registry import TAG_URI

    return {TAG_URI: model_uri, "variant": VARIANT, "source": KIND, "vgg_weights": "imagenet",
            "source_file": source.file, "source_sha256": source.sha256,
            "source_epoch": str(source.epoch), "source_iterations": str(source.iterations)}


def _clients(tracking_uri: str):
    """An MlflowClient on the store and its registry ($MLFLOW_REGISTRY_URI, else the same
    store, as :func:`ytmt.serving.checkpoint_from_model_uri` reads it): explicit, so that no
    registry URI set earlier in this process is used by accident."""
    from mlflow import MlflowClient

    registry = os.environ.get("MLFLOW_REGISTRY_URI") or tracking_uri
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=registry)


def register(model_path: Path, source: SourceFile, reg: Registration) -> Registration:
    """Log ``model_path`` as a pyfunc in a run of experiment ``ytmt-import``, register it as
    a version of ``reg.name`` with tags naming the source, and point ``reg.alias`` at it.
    Fills ``reg`` as it goes, so that :meth:`Registration.undo` can take it back."""
    import mlflow

    from ytmt.serving import log_model
    from ytmt.tracking import filter_value, get_or_create_experiment

    c = _clients(reg.tracking_uri)
    exp = get_or_create_experiment(reg.tracking_uri, EXPERIMENT)
    mlflow.set_tracking_uri(reg.tracking_uri)  # log_model logs into the active (fluent) run
    with mlflow.start_run(experiment_id=exp, run_name=f"import-{source.file}") as run:
        reg.run_id = run.info.run_id
        mlflow.set_tags({"variant": VARIANT, "vgg_weights": "imagenet", "source": KIND,
                         "source_file": source.file, "source_sha256": source.sha256})
        mlflow.log_params({"epoch": source.epoch, "iterations": source.iterations,
                           "width": source.width, "stage2_from": source.stage2_from})
        reg.model_uri = log_model(model_path, name="model").model_uri
    if not c.search_registered_models(f"name = {filter_value(reg.name, 'model name')}"):
        c.create_registered_model(reg.name, description="YTMT reflection separation models "
                                  "(pyfunc: base64 image in, transmission/reflection PNGs out)")
        reg.created_model = True
    mv = c.create_model_version(reg.name, reg.model_uri, tags=_version_tags(source, reg.model_uri),
                                model_id=reg.model_uri.rsplit("/", 1)[-1])
    reg.version = int(mv.version)
    c.set_registered_model_alias(reg.name, reg.alias, str(reg.version))
    return reg


# --------------------------------------------------------------------------- the command

def _check_out(out: Path) -> None:
    """``--out`` may be new, an empty folder or an earlier import; anything else is kept."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        try:
            kind = (read_info(out).source or {}).get("kind")
        except (OSError, ValueError, TypeError):
            kind = None
        if kind != KIND:
            raise ValueError(f"--out {out}: folder exists and is not an earlier import "
                             "(no info.json of kind authors-import); choose another folder")


def _info(source: SourceFile, out: Path, vgg, reg: Registration | None) -> ModelInfo:
    """``info.json`` (the :mod:`ytmt.model_store` contract): where the weights came from in
    ``source`` (kind, file, SHA-256, epoch, iterations, width, VGG file, registration)."""
    registered = None if reg is None else {"name": reg.name, "alias": reg.alias,
                                           "version": reg.version, "uri": reg.uri}
    return ModelInfo(variant=VARIANT, seed=0, model_path=str((out / "model.pt").resolve()),
                     mlflow_run_id=reg.run_id if reg else None,
                     model_uri=reg.model_uri if reg else None, epochs=source.epoch or 0,
                     vgg_weights=vgg.weights.mode,
                     source={"kind": KIND, **asdict(source), "vgg_source": vgg.weights.source,
                             "registered": registered})


def _registration(register_name: str | None, alias: str | None,
                  tracking_uri: str | None) -> Registration | None:
    """Validated registry settings (before any heavy work), or None without --register."""
    if register_name is None:
        if alias is not None:
            raise ValueError("--alias needs --register NAME")
        return None
    from ytmt.evaluation.config import RegisterConfig
    from ytmt.tracking import check_tracking_uri, resolve_tracking_uri

    alias = alias or DEFAULT_ALIAS
    RegisterConfig(model_name=register_name, alias=alias).validate()
    uri = resolve_tracking_uri(tracking_uri)
    check_tracking_uri(uri)
    return Registration(tracking_uri=uri, name=register_name, alias=alias)


def import_authors(file: str | Path, out: str | Path, vgg_path: str | Path | None = None,
                   register_name: str | None = None, alias: str | None = None,
                   tracking_uri: str | None = None,
                   progress: Progress | None = None) -> ModelInfo:
    """Import the released ``file`` into ``out`` (module docstring); returns info.json's
    content. On any error nothing is written to ``out`` or the registry."""
    from ytmt.checkpoint import model_spec, save_checkpoint
    from ytmt.fileio import partial_dir, replace_dir

    say = progress or (lambda _msg: None)
    out = Path(out)
    reg = _registration(register_name, alias, tracking_uri)
    _check_out(out)
    say(f"reading {file} (weights only)")
    source, stage1, stage2 = read_released(file)
    say(f"{source.file}: sha256 {source.sha256}, epoch {source.epoch}, iterations "
        f"{source.iterations}, width {source.width}, stage 2 from {source.stage2_from}")
    vgg = load_imagenet_vgg(vgg_path)
    say(f"VGG-19: {vgg.weights.source} (hash verified)")
    model = build_imported(source, stage1, stage2, vgg)
    staging = partial_dir(out)
    try:
        # the authors' own float operations: the hypercolumn materialised (ytmt.checkpoint)
        spec = {**model_spec(model, source.width), "lazy_hypercolumn": False}
        save_checkpoint(staging / "model.pt", model, spec,
                        extra={"source": asdict(source)})
        if reg is not None:
            say(f"registering as a version of {reg.name!r} with alias {reg.alias!r}")
            register(staging / "model.pt", source, reg)
        info = _info(source, out, vgg, reg)
        write_info(staging, replace(info, model_path="model.pt"))  # relative: the folder moves
        replace_dir(staging, out)
    except BaseException:
        if reg is not None:
            reg.undo()
        raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    say(f"wrote {out / 'model.pt'} and {out / 'info.json'}"
        + (f"; registered {reg.uri} (version {reg.version})" if reg else ""))
    return info
