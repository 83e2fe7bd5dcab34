"""Model checkpoints: plain tensors and builtins only, always loaded with ``weights_only=True``.

A checkpoint is a dict::

    {"format": "ytmt-checkpoint/1",
     "model": {"variant": "ytmt-ucs", "width": 64, "hypercolumn": True, "plain_layers": 10},
     "vgg": {"mode": "imagenet" | "random", "source": "..."},
     "state_dict": {...},        # the whole SeparationModel, VGG included: self-contained
     "extra": {...}}             # epoch, optimiser state, metrics: whatever the caller adds

A training checkpoint (written every ``train.checkpoint_every`` epochs) leaves out what
training never changes: the frozen VGG-19 of the hypercolumn (``features.vgg.*``, 80 MB)
and a two-stage model's frozen stage 1 (``stage1.*``). They are recorded by identity
instead, a SHA-256 of their tensors (:func:`tensor_digest`) under ``"frozen"``::

     "frozen": {"vgg": "<sha256>", "stage1": "<sha256>"}

Resuming rebuilds them as the run did (VGG from the params, stage 1 from the stage-1
checkpoint the run config names) and :func:`load_training_state` refuses a mismatch;
:func:`with_frozen_tensors` puts them back from their identity (the VGG from its
``vgg`` record, stage 1 from its checkpoint file) to write a self-contained ``model.pt``.

A two-stage model takes its trained stage 1 from such a file with :func:`load_stage1`, which
refuses a stage 1 trained on other VGG-19 weights than the model's own: stage 1 reads the
hypercolumn of the model's VGG, so it must be the one it was trained with.

Loading never unpickles code: a file that needs it is refused with :class:`UnsafeCheckpoint`.
Writes are atomic (temporary file + rename), so a killed process never leaves a truncated
checkpoint under the final name.
"""

from __future__ import annotations

import hashlib
import pickle
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ytmt.archs.build import build_model
from ytmt.archs.vgg import VGG19Features, VGGWeights, VGGWeightsMissing, find_vgg19_file
from ytmt.archs.ytmt import SeparationModel
from ytmt.fileio import atomic_write

FORMAT = "ytmt-checkpoint/1"


class UnsafeCheckpoint(ValueError):
    """The file needs arbitrary code to load (a pickled object), so it is refused."""


def model_spec(model: SeparationModel, width: int, plain_layers: int = 10) -> dict[str, Any]:
    return {"variant": model.variant_name, "width": width,
            "hypercolumn": not isinstance(model.features, torch.nn.Identity),
            "plain_layers": plain_layers}


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    return atomic_write(path, lambda f: torch.save(obj, f))


def save_checkpoint(path: str | Path, model: SeparationModel, spec: dict[str, Any],
                    extra: dict[str, Any] | None = None,
                    frozen: Mapping[str, str] | None = None) -> Path:
    """Write ``model`` (unwrap DDP first) with its construction ``spec`` (see model_spec).
    ``frozen``: the model's :func:`frozen_identity` (computed once per run): its frozen
    tensors are left out and recorded by these digests (a training checkpoint); None: a
    self-contained file."""
    weights = vgg_identity(model)
    skip = tuple(FROZEN_PREFIXES[part] for part in frozen or {})
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()
             if not (skip and k.startswith(skip))}
    ckpt = {"format": FORMAT, "model": dict(spec),
            "vgg": {"mode": weights.mode, "source": weights.source},
            "state_dict": state, "extra": extra or {}}
    if frozen:
        ckpt["frozen"] = dict(frozen)
    return atomic_torch_save(ckpt, path)


# --------------------------------------------------------------------------- frozen parts

# frozen part -> the prefix of its tensors in a SeparationModel's state dict
FROZEN_PREFIXES = {"vgg": "features.vgg.", "stage1": "stage1."}


def tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of named tensors: names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def frozen_identity(model: SeparationModel) -> dict[str, str]:
    """``{part: digest}`` of what training never changes in ``model``: ``vgg`` (the
    hypercolumn's VGG-19) and, for a two-stage model, ``stage1``."""
    state = model.state_dict()
    parts = []
    if getattr(model.features, "vgg", None) is not None:
        parts.append("vgg")
    if model.stage2 is not None:
        parts.append("stage1")
    return {part: tensor_digest({k: v for k, v in state.items()
                                 if k.startswith(FROZEN_PREFIXES[part])})
            for part in parts}


def load_training_state(model: SeparationModel, ckpt: dict[str, Any],
                        path: str | Path) -> None:
    """Load the checkpoint ``ckpt`` (read from ``path``) into ``model``, whose frozen parts
    are already in place (built from the run's params and stage-1 checkpoint). A training
    checkpoint's ``frozen`` digests must match the model's own (ValueError naming the part
    otherwise); every other tensor of the model must be in the checkpoint, and nothing else."""
    recorded = ckpt.get("frozen") or {}
    ours = frozen_identity(model)
    for part, digest in recorded.items():
        if ours.get(part) != digest:
            raise ValueError(
                f"{path}: this checkpoint was trained with {_PART_NAMES[part]} "
                f"{digest[:12]}, but this run's is {(ours.get(part) or 'absent')[:12]}: "
                f"resume with the same {_PART_SOURCE[part]}")
    frozen = tuple(FROZEN_PREFIXES[part] for part in recorded)
    missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
    missing = [k for k in missing if not (frozen and k.startswith(frozen))]
    if missing or unexpected:
        raise ValueError(f"{path}: does not fit {model.variant_name}: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}")


_PART_NAMES = {"vgg": "VGG-19 weights", "stage1": "a stage 1"}
_PART_SOURCE = {"vgg": "model.vgg_weights, model.vgg_path and model.vgg_seed",
                "stage1": "stage-1 checkpoint"}


def vgg_from_identity(weights: VGGWeights) -> VGG19Features:
    """The VGG-19 a ``vgg`` record names: seeded random weights (``source`` ``seed=N``)
    regenerated, ImageNet weights read from ``source`` or where :func:`find_vgg19_file`
    looks. ValueError / :class:`VGGWeightsMissing` when it cannot be rebuilt."""
    vgg = VGG19Features()
    if weights.mode == "random" and weights.source.startswith("seed="):
        vgg.randomize(int(weights.source[len("seed="):]))
        return vgg.eval()
    if weights.mode == "imagenet":
        found = find_vgg19_file(weights.source)
        if found is None:
            raise VGGWeightsMissing(f"the checkpoint's ImageNet VGG-19 ({weights.source}) is "
                                    f"not on this machine; set YTMT_VGG19_PATH to the file")
        vgg.load_torchvision(found)
        return vgg.eval()
    raise ValueError(f"VGG-19 {weights.mode} ({weights.source}) cannot be rebuilt")


def with_frozen_tensors(ckpt: dict[str, Any], stage1_checkpoint: str | Path | None = None,
                        path: str | Path = "checkpoint") -> dict[str, Any]:
    """A training checkpoint made self-contained: the frozen tensors it records by
    identity put back, the VGG-19 rebuilt from its ``vgg`` record
    (:func:`vgg_from_identity`) and stage 1 read from ``stage1_checkpoint``, each checked
    against the recorded digest. A self-contained checkpoint is returned as it is."""
    recorded = ckpt.get("frozen") or {}
    state = dict(ckpt["state_dict"])
    for part, digest in recorded.items():
        if part == "vgg":
            vgg = vgg_from_identity(VGGWeights(**ckpt["vgg"]))
            tensors = {FROZEN_PREFIXES["vgg"] + k: v for k, v in vgg.state_dict().items()}
        elif stage1_checkpoint is None:
            raise ValueError(f"{path}: a training checkpoint of a two-stage model; its frozen "
                             f"stage 1 is in the stage-1 checkpoint, pass it")
        else:
            tensors = {k: v for k, v in load_checkpoint(stage1_checkpoint)["state_dict"].items()
                       if k.startswith(FROZEN_PREFIXES["stage1"])}
        if tensor_digest(tensors) != digest:
            raise ValueError(f"{path}: the rebuilt {_PART_NAMES[part]} (digest "
                             f"{tensor_digest(tensors)[:12]}) are not the ones it was trained "
                             f"with ({digest[:12]})")
        state.update(tensors)
    return {**{k: v for k, v in ckpt.items() if k != "frozen"}, "state_dict": state}


def load_weights_only(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU, with one-line errors: a missing file
    (FileNotFoundError), pickled code or objects (:class:`UnsafeCheckpoint`), a truncated or
    foreign file (ValueError)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpoint(
            f"{path}: refused: the file holds pickled code or objects that a weights-only "
            f"load does not allow ({_first_line(err)}). Only load checkpoints you "
            f"trust, and re-save them as plain state dicts.") from None
    except (RuntimeError, EOFError, ValueError, struct.error, OSError) as err:
        raise ValueError(f"{path}: not a readable torch checkpoint ({_first_line(err)})") \
            from None


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict, loaded with ``weights_only=True``; clear errors otherwise."""
    ckpt = load_weights_only(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path}: not a ytmt checkpoint (expected format {FORMAT!r})")
    return ckpt


def vgg_identity(model: SeparationModel) -> VGGWeights:
    """What the model's hypercolumn VGG holds (``none`` without a hypercolumn)."""
    vgg = getattr(model.features, "vgg", None)
    return vgg.weights if vgg is not None else VGGWeights("none", "no hypercolumn")


def check_stage1_vgg(ckpt: dict[str, Any], model: SeparationModel, path: str | Path) -> None:
    """ValueError unless the VGG stage 1 was trained with (the checkpoint's ``vgg`` record and
    VGG tensors) is the model's own: same mode, and the same weights (seeded random weights
    of the same seed, or ImageNet weights read from any path, are the same)."""
    theirs, ours = VGGWeights(**ckpt["vgg"]), vgg_identity(model)
    prefix = FROZEN_PREFIXES["vgg"]
    own = {k: v for k, v in model.state_dict().items() if k.startswith(prefix)}
    saved = {k: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    digest = (ckpt.get("frozen") or {}).get("vgg")
    if saved:
        same = saved.keys() == own.keys() and all(torch.equal(saved[k], own[k].cpu())
                                                  for k in own)
    elif digest:  # a training checkpoint: the VGG by its digest
        same = digest == tensor_digest(own)
    else:  # a checkpoint without the VGG tensors: its record is all there is
        same = theirs.mode == "imagenet" or theirs.source == ours.source
    if theirs.mode != ours.mode or not same:
        raise ValueError(
            f"{path}: stage 1 was trained with VGG-19 {theirs.mode} ({theirs.source}) but "
            f"this {model.variant_name} model's VGG-19 is {ours.mode} ({ours.source}): stage 1 "
            f"would read hypercolumns it never saw. Build stage 2 with the VGG stage 1 used "
            f"(model.vgg_weights, model.vgg_path, model.vgg_seed), e.g. vgg_weights="
            f"{theirs.mode}.")


def load_stage1(model: SeparationModel, path: str | Path, init_stage2: bool = True) -> None:
    """Load the trained stage 1 in the checkpoint at ``path`` (a single-stage model of
    ``model``'s stage-1 variant) into the two-stage ``model``, frozen, stage 2 initialised
    from it (:meth:`SeparationModel.load_stage1`); the checkpoint's variant and VGG are
    checked first (:func:`check_stage1_vgg`): an ablation of the same shapes, e.g.
    ``ytmt-ucs-relu-only`` for ``ytmt-uct``, would load without an error otherwise."""
    ckpt = load_checkpoint(path)
    found, wanted = ckpt["model"]["variant"], model.variant.stage1_variant
    if found != wanted:
        raise ValueError(f"{path}: a {found} checkpoint; the stage 1 of {model.variant_name} "
                         f"is a trained {wanted}")
    check_stage1_vgg(ckpt, model, path)
    state = {k[len("stage1."):]: v for k, v in ckpt["state_dict"].items()
             if k.startswith("stage1.")}
    model.load_stage1(state, init_stage2)


def model_from_checkpoint(path: str | Path, **build_kwargs: Any) -> SeparationModel:
    """Rebuild the model a checkpoint describes and load its weights (VGG included; a
    single-stage training checkpoint gets its VGG back from its identity). A spec
    with ``lazy_hypercolumn: false`` (imported releases) convolves the materialised
    hypercolumn, the authors' exact float operations; ``build_kwargs`` override."""
    ckpt = with_frozen_tensors(load_checkpoint(path), path=path)
    spec = ckpt["model"]
    build_kwargs.setdefault("lazy_hypercolumn", spec.get("lazy_hypercolumn", True))
    model = build_model(spec["variant"], width=spec["width"], hypercolumn=spec["hypercolumn"],
                        plain_layers=spec.get("plain_layers", 10), vgg_weights="random",
                        **build_kwargs)
    model.load_state_dict(ckpt["state_dict"])
    vgg = getattr(model.features, "vgg", None)
    if vgg is not None:
        vgg.weights = VGGWeights(**ckpt["vgg"])
    return model.eval()
