"""Model checkpoints: plain tensors and builtins only, always loaded with ``weights_only=True``.

A checkpoint is a dict::

    {"format": "ytmt-checkpoint/1",
     "model": {"variant": "ytmt-ucs", "width": 64, "hypercolumn": True, "plain_layers": 10},
     "vgg": {"mode": "imagenet" | "random", "source": "..."},
     "state_dict": {...},        # the whole SeparationModel, VGG included: self-contained
     "extra": {...}}             # epoch, optimiser state, metrics: whatever the caller adds

A two-stage model takes its trained stage 1 from such a file with :func:`load_stage1`, which
refuses a stage 1 trained on other VGG-19 weights than the model's own: stage 1 reads the
hypercolumn of the model's VGG, so it must be the one it was trained with.

Loading never unpickles code: a file that needs it is refused with :class:`UnsafeCheckpoint`.
Writes are atomic (temporary file + rename), so a killed process never leaves a truncated
checkpoint under the final name.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path
from typing import Any

import torch

from ytmt.archs.build import build_model
from ytmt.archs.vgg import VGGWeights
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
                    extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (unwrap DDP first) with its construction ``spec`` (see model_spec)."""
    weights = vgg_identity(model)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return atomic_torch_save({"format": FORMAT, "model": dict(spec),
                              "vgg": {"mode": weights.mode, "source": weights.source},
                              "state_dict": state, "extra": extra or {}}, path)


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
    own = {k: v for k, v in model.state_dict().items() if k.startswith("features.vgg.")}
    saved = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("features.vgg.")}
    if saved:
        same = saved.keys() == own.keys() and all(torch.equal(saved[k], own[k].cpu())
                                                  for k in own)
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
    from it (:meth:`SeparationModel.load_stage1`); the VGG is checked first
    (:func:`check_stage1_vgg`)."""
    ckpt = load_checkpoint(path)
    check_stage1_vgg(ckpt, model, path)
    state = {k[len("stage1."):]: v for k, v in ckpt["state_dict"].items()
             if k.startswith("stage1.")}
    model.load_stage1(state, init_stage2)


def model_from_checkpoint(path: str | Path, **build_kwargs: Any) -> SeparationModel:
    """Rebuild the model a checkpoint describes and load its weights (VGG included). A spec
    with ``lazy_hypercolumn: false`` (imported releases) convolves the materialised
    hypercolumn, the authors' exact float operations; ``build_kwargs`` override."""
    ckpt = load_checkpoint(path)
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
