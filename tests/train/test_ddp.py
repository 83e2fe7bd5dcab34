"""Acceptance 1: DDP over 2 Ray workers with batch b equals 1 worker with batch 2b, and each
worker reads a disjoint part of the data."""

from pathlib import Path

import pytest
import torch
from torch.utils.data import IterableDataset

from ytmt.checkpoint import load_checkpoint
from ytmt.train.components import build_components, resolve_params
from ytmt.train.loop import CHECKPOINT_FILE
from ytmt.train.trainer import build_trainer, make_loop_config

from .conftest import pickle_by_value, tiny_params

pickle_by_value(__name__)

B = 2  # per-worker batch


class Pairs(IterableDataset):
    """``n`` fixed (M, T, R) samples; rank r of w yields the contiguous block r of w and
    writes the ids it yielded to ``log_dir`` (to check that workers' data are disjoint)."""

    def __init__(self, split, n, size, rank, world_size, log_dir):
        self.split, self.size, self.log_dir = split, size, Path(log_dir)
        per = n // world_size
        self.indices = list(range(rank * per, (rank + 1) * per))
        self.tag = f"{split}-rank{rank}-of{world_size}"

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.indices)

    def __iter__(self):
        seen = []
        for i in self.indices:
            g = torch.Generator().manual_seed(1000 * (self.split == "val") + i)
            t = torch.rand(3, self.size, self.size, generator=g) * 0.6
            r = torch.rand(3, self.size, self.size, generator=g) * 0.4
            seen.append(f"{self.split}-{i}")
            yield {"mixture": (t + r).clamp(0, 1), "transmission": t, "reflection": r,
                   "is_real": torch.tensor(False), "id": f"{self.split}-{i}"}
        (self.log_dir / f"{self.tag}.txt").write_text("\n".join(seen))


class PairsFn:
    """``dataset_fn`` of the loop: the first ``2·B`` training samples, 2 validation ones."""

    def __init__(self, log_dir):
        self.log_dir = str(log_dir)

    def __call__(self, root, split, crop, augment, seed, rank, world_size):
        n = 2 * B if split == "train" else 2
        return Pairs(split, n, 32, rank, world_size, self.log_dir)


def one_step(tmp_path, workers, batch, name):
    # exclusion = 0: its α normalises by whole-batch gradient statistics, a batch-level
    # (not per-sample-mean) quantity, so it is per-worker under DDP like BatchNorm.
    # adam_eps = 1: Adam's first step is then ≈ lr·g, sensitive to the gradient's size
    # (with eps = 1e-8 it is lr·sign(g) and would hide a sum-instead-of-mean bug).
    logs = tmp_path / name
    logs.mkdir()
    params = resolve_params(tiny_params(
        tmp_path, train__num_workers=workers, train__batch_size=batch,
        train__max_steps_per_epoch=1, train__lr=1e-2, train__adam_eps=1.0,
        loss__exclusion=0.0))
    config = make_loop_config(params, "ytmt-ucs", tmp_path)
    config["dataset_fn"] = PairsFn(logs)
    result = build_trainer(config, params.train, name).fit()
    with result.checkpoint.as_directory() as d:
        state = load_checkpoint(Path(d) / CHECKPOINT_FILE)["state_dict"]
    seen = {p.stem: set(p.read_text().split()) for p in logs.glob("*.txt")}
    return params, state, seen


@pytest.mark.slow
def test_two_workers_batch_b_equal_one_worker_batch_2b(tmp_path, ray_local):
    params, ddp, seen = one_step(tmp_path, 2, B, "ddp")
    train0, train1 = seen["train-rank0-of2"], seen["train-rank1-of2"]
    assert len(train0) == len(train1) == B and not train0 & train1

    _, single, seen1 = one_step(tmp_path, 0, 2 * B, "single")
    assert seen1["train-rank0-of1"] == train0 | train1
    _, half, _ = one_step(tmp_path, 0, B, "half")  # negative control: rank 0's data only

    init = build_components(params, "ytmt-ucs").model.state_dict()
    trained = [k for k in init if init[k].is_floating_point() and not k.startswith("features")]

    def same_step(a, b):
        return all(torch.allclose(a[k] - init[k], b[k] - init[k], rtol=1e-3, atol=1e-7)
                   for k in trained)

    assert max((ddp[k] - init[k]).abs().max().item() for k in trained) > 1e-4  # a real step
    assert same_step(ddp, single)
    # the comparison can fail: rank 0's half of the batch alone gives another step
    assert not same_step(ddp, half)
