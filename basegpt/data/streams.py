"""Endless training batches with an exactly restorable position.

The training loop asks for micro-batches one at a time, across epoch boundaries, and saves
the position in every checkpoint so a resumed run sees the same batches in the same order:

    BatchStream   a Dataset in ResumableSampler order, each global draw sharded by rank
    LoaderStream  a user's DataLoader (the original design's usage), replayed on resume
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from basegpt.data.memmap import ResumableSampler

class BatchStream:
    """Endless micro-batches from a Dataset in ResumableSampler order, sharded by rank.

    Each global draw takes world * batch_size indices from the sampler; rank r keeps slice r.
    The position (epoch, indices handed out) is exactly restorable, so a resumed run sees the
    same batches in the same order. The last incomplete draw of an epoch is dropped, so every
    micro-batch is full.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, rank: int = 0,
                 world: int = 1) -> None:
        per_draw = batch_size * world
        if len(dataset) < per_draw:
            raise ValueError(f"the training data has {len(dataset)} windows, fewer than one "
                             f"global micro-batch ({batch_size} x {world} processes); lower "
                             "batch_size or give more text")
        self.dataset, self.batch_size, self.rank, self.world = dataset, batch_size, rank, world
        self.sampler = ResumableSampler(dataset, seed=seed)
        self.batches_per_epoch = len(dataset) // per_draw

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        per_draw = self.batch_size * self.world
        if self.sampler.position + per_draw > self.sampler.n:       # drop the ragged tail
            self.sampler.epoch += 1
            self.sampler.position = 0
        order = self.sampler.permutation(self.sampler.epoch)
        start = self.sampler.position + self.rank * self.batch_size
        indices = order[start:start + self.batch_size]
        self.sampler.position += per_draw
        xs, ys = zip(*(self.dataset[int(i)] for i in indices))
        return torch.stack(xs), torch.stack(ys)                       # (B, T) each

    @property
    def epoch(self) -> float:
        return self.sampler.epoch + self.sampler.position / self.sampler.n

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)


class LoaderStream:
    """Endless micro-batches from a user's DataLoader (the original design's usage).

    Exact resume needs the loader's order to be reproducible; for that, pass a Dataset
    instead and fit() builds a BatchStream.
    """

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader
        self.batches_per_epoch = len(loader)
        self.epochs_done = 0
        self.position = 0
        self._it: Iterator | None = None

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._it is None:
            self._it = iter(self.loader)
        try:
            batch = next(self._it)
        except StopIteration:
            self.epochs_done += 1
            self.position = 0
            self._it = iter(self.loader)
            batch = next(self._it)
        self.position += 1
        x, y = batch
        return x, y

    @property
    def epoch(self) -> float:
        return self.epochs_done + self.position / max(self.batches_per_epoch, 1)

    def state_dict(self) -> dict:
        return {"epochs_done": self.epochs_done, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epochs_done = state["epochs_done"]
        self._it = iter(self.loader)
        for _ in range(state["position"]):           # replay to the same place
            next(self._it)
        self.position = state["position"]


def make_stream(data: Any, batch_size: int, seed: int, rank: int = 0,
                world: int = 1) -> BatchStream | LoaderStream:
    """A BatchStream for a Dataset, a LoaderStream for a DataLoader."""
    if isinstance(data, DataLoader):
        if world > 1:
            raise ValueError("under torchrun, pass a Dataset (fit shards it by rank), not a DataLoader")
        return LoaderStream(data)
    if isinstance(data, Dataset):
        return BatchStream(data, batch_size, seed, rank, world)
    raise TypeError(f"training data must be a torch Dataset or DataLoader, got {type(data).__name__}")
