"""Endless training batches with an exactly restorable position.

The training loop asks for micro-batches one at a time, across epoch boundaries, and saves
the position in every checkpoint so a resumed run sees the same batches in the same order:

    BatchStream   a Dataset in ResumableSampler order, each global draw sharded by rank
    LoaderStream  a user's DataLoader (the original design's usage), replayed on resume
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
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
        self._order: tuple[tuple[int, int], np.ndarray] | None = None   # ((seed, epoch), order)

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        per_draw = self.batch_size * self.world
        if self.sampler.position + per_draw > self.sampler.n:       # drop the ragged tail
            self.sampler.epoch += 1
            self.sampler.position = 0
        order = self._epoch_order()
        start = self.sampler.position + self.rank * self.batch_size
        indices = order[start:start + self.batch_size]
        self.sampler.position += per_draw
        xs, ys = zip(*(self.dataset[int(i)] for i in indices))
        return torch.stack(xs), torch.stack(ys)                       # (B, T) each

    def _epoch_order(self) -> np.ndarray:
        """The sampler's permutation of the current epoch, drawn once per epoch: drawing it
        costs O(n) (~0.1 s for 4 M windows), far too much to repeat for every micro-batch.
        Keyed by (seed, epoch), so after load_state_dict() the right order is drawn anew."""
        key = (self.sampler.seed, self.sampler.epoch)
        if self._order is None or self._order[0] != key:
            self._order = key, self.sampler.permutation(self.sampler.epoch)
        return self._order[1]

    @property
    def epoch(self) -> float:
        return self.sampler.epoch + self.sampler.position / self.sampler.n

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)


class LoaderStream:
    """Endless micro-batches from a user's DataLoader (the original design's usage).

    A DataLoader(shuffle=True) draws each epoch's order from torch's global RNG when the
    epoch starts, and so does any sampler without a generator of its own. To make that order
    restorable, each epoch starts from a forked global RNG seeded by (seed, epoch): the
    shuffle never draws from the training RNG (dropout's), and on resume the same epoch order
    is drawn again and the consumed batches are skipped. A loader with its own `generator=`
    draws from that instead, which cannot be rewound: `restorable` is False and fit() warns
    on resume.
    """

    def __init__(self, loader: DataLoader, seed: int = 0) -> None:
        self.loader = loader
        self.seed = seed
        self.batches_per_epoch = len(loader)
        self.epochs_done = 0
        self.position = 0
        self._it: Iterator | None = None

    @property
    def restorable(self) -> bool:
        """Whether resume reproduces the loader's order (no generator of its own)."""
        sampler = getattr(self.loader, "sampler", None)
        return (getattr(self.loader, "generator", None) is None
                and getattr(sampler, "generator", None) is None)

    def _open_epoch(self, take: int) -> Any:
        """Start this epoch's iterator and take `take` (>= 1) batches from it, all under a
        forked global RNG seeded by (seed, epoch); returns the last batch taken. The first
        take draws the shuffle. Replayed batches (take > 1 on resume) draw from the fork
        too, so the training RNG restored from the checkpoint is left exactly as it was."""
        epoch_seed = int(np.random.SeedSequence([self.seed, self.epochs_done]).generate_state(1)[0])
        with torch.random.fork_rng(devices=[]):          # the CPU RNG: samplers draw there
            torch.default_generator.manual_seed(epoch_seed)
            self._it = iter(self.loader)
            for _ in range(take):
                batch = next(self._it)
        return batch

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._it is None:
            batch = self._open_epoch(1)
        else:
            try:
                batch = next(self._it)
            except StopIteration:
                self.epochs_done += 1
                self.position = 0
                batch = self._open_epoch(1)
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
        self.position = state["position"]
        self._it = None
        if self.position:                            # replay this epoch to the same place
            self._open_epoch(self.position)


def make_stream(data: Any, batch_size: int, seed: int, rank: int = 0,
                world: int = 1) -> BatchStream | LoaderStream:
    """A BatchStream for a Dataset, a LoaderStream for a DataLoader."""
    if isinstance(data, DataLoader):
        if world > 1:
            raise ValueError("under torchrun, pass a Dataset (fit shards it by rank), not a DataLoader")
        return LoaderStream(data, seed)
    if isinstance(data, Dataset):
        return BatchStream(data, batch_size, seed, rank, world)
    raise TypeError(f"training data must be a torch Dataset or DataLoader, got {type(data).__name__}")
