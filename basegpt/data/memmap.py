"""Training windows read straight from token shards on disk, and a resumable shuffled sampler.

`ShardDataset` gives the same (input, target) pairs as `SlidingWindowDataset`, but over the
token streams that `prepare()` wrote: the shards of one split, read as one continuous stream
(documents already separated by end-of-text tokens), memory-mapped with np.memmap, so only
the pages a window touches are ever read, and those are unmapped again every few windows.
RAM therefore stays flat however big the corpus (benchmarks/bench_data.py measures it). The mapping is opened lazily in each process and
never pickled, so DataLoader worker processes each map the files themselves.

`ResumableSampler` visits every window exactly once per epoch in a seeded random order (a
permutation drawn from (seed, epoch)) and can report and restore its exact position: training
resumed from a checkpoint sees exactly the windows it had not seen yet.
"""

from __future__ import annotations

import json
import mmap
import os
from collections.abc import Iterator, Sized
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from basegpt.data.pipeline import META_FORMAT, META_VERSION, SPLITS
from basegpt.data.shards import open_shard, read_header
from basegpt.tokenizer import Tokenizer


def load_meta(data_dir: str | os.PathLike) -> dict:
    """Read and check `data_dir/meta.json`, the index that `prepare()` writes."""
    path = Path(data_dir) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {data_dir} is not a prepared data "
                                "folder; create it with `basegpt prepare --out DIR`")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); re-run `basegpt prepare`") from None
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        raise ValueError(f"{path} is not a basegpt token index (format should be "
                         f"{META_FORMAT!r}); re-run `basegpt prepare`")
    if meta.get("version") != META_VERSION:
        raise ValueError(f"{path} has version {meta.get('version')!r}; this basegpt reads "
                         f"version {META_VERSION}: re-run `basegpt prepare`")
    return meta


def check_tokenizer(meta: dict, tokenizer: Tokenizer | None = None,
                    vocab_size: int | None = None, where: str = "the shards") -> None:
    """Fail if the shards were made by another tokenizer, or the model's vocabulary is too
    small for their ids. A larger model vocabulary is fine (e.g. rounded up for speed)."""
    if tokenizer is not None and tokenizer.hash != meta["tokenizer_hash"]:
        raise ValueError(f"{where} were tokenized by tokenizer {meta['tokenizer_hash'][:12]}, "
                         f"but the given tokenizer is {tokenizer.hash[:12]}; train with the "
                         "tokenizer.json saved beside the shards, or re-run `basegpt prepare` "
                         "with this tokenizer")
    if vocab_size is not None and vocab_size < meta["vocab_size"]:
        raise ValueError(f"{where} hold ids of a {meta['vocab_size']}-token vocabulary but the "
                         f"model's vocab_size is {vocab_size}; build the model with "
                         f"vocab_size={meta['vocab_size']} (len(tokenizer))")


def check_shard_data(data: object, tokenizer: Tokenizer | None,
                     vocab_size: int | None) -> None:
    """check_tokenizer() for training data that reads prepared shards: a ShardDataset, or a
    DataLoader (or Subset) around one. Any other data has no meta.json to check against."""
    while not isinstance(data, ShardDataset) and hasattr(data, "dataset"):
        data = data.dataset
    if isinstance(data, ShardDataset):
        check_tokenizer(data.meta, tokenizer, vocab_size, where=f"the shards in {data.data_dir}")


RELEASE_EVERY = 16
"""Windows read between two releases of the mapped pages (see _release): measured on the
300 MB benchmark corpus, every 16 keeps the loader's RSS within ~15 MB of its start at a
small cost (one madvise call per 16 windows)."""


class ShardDataset(Dataset):
    """(input, target) windows of n_context tokens over one split of prepared shards.

    Args:
        data_dir: a folder written by `prepare()` / `basegpt prepare`.
        n_context: input length T.
        split: "train" or "val".
        stride: tokens between window starts; default n_context (non-overlapping).
        tokenizer: if given, its hash must equal the one the shards were made with. Either
            way `dataset.tokenizer` is the shards' tokenizer: this one, else the
            tokenizer.json that prepare() saved beside them (loaded on first use).
        vocab_size: if given (the model's), it must cover the shards' vocabulary. fit()
            checks both against the model and tokenizer it trains with.

    The split's shards form one stream of N tokens. Window i is stream[s : s + T + 1] with
    s = i * stride, input = its first T tokens, target = its last T; only whole windows are
    made, so there are (N - T - 1) // stride + 1 of them and no padding is needed (the at
    most `stride` tokens left at the end are not targets). Windows may span two shards.
    Items are int64 tensors of shape (T,).
    """

    def __init__(self, data_dir: str | os.PathLike, n_context: int, split: str = "train", *,
                 stride: int | None = None, tokenizer: Tokenizer | None = None,
                 vocab_size: int | None = None) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        for name, value in (("n_context", n_context), ("stride", stride)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.data_dir = Path(data_dir)
        self.meta = load_meta(data_dir)
        check_tokenizer(self.meta, tokenizer, vocab_size, where=f"the shards in {data_dir}")
        self._tokenizer = tokenizer
        self.n_context = n_context
        self.stride = stride if stride is not None else n_context
        self.split = split
        self.paths = [self.data_dir / shard["file"] for shard in self.meta["shards"][split]]
        counts = []
        for path, shard in zip(self.paths, self.meta["shards"][split]):
            header = read_header(path)
            if header.n_tokens != shard["tokens"] or header.dtype.name != self.meta["dtype"]:
                raise ValueError(f"{path} holds {header.n_tokens} {header.dtype.name} tokens "
                                 f"but meta.json says {shard['tokens']} {self.meta['dtype']}: "
                                 "the folder mixes two runs; re-run `basegpt prepare`")
            counts.append(header.n_tokens)
        self.offsets = np.cumsum([0] + counts)                # shard k = stream[offsets[k]:offsets[k+1]]
        self.n_tokens = int(self.offsets[-1])
        if self.n_tokens < n_context + 1:
            raise ValueError(f"the {split} split of {data_dir} has {self.n_tokens} tokens, too "
                             f"few for one window of n_context={n_context} (+1 target); use a "
                             "smaller n_context or more text")
        self._maps: list | None = None

    @property
    def tokenizer(self) -> Tokenizer | None:
        """The tokenizer given, else data_dir/tokenizer.json, else None (a folder without
        one). fit() uses it for bits per byte and saves it into the run directory."""
        if self._tokenizer is None and (self.data_dir / "tokenizer.json").is_file():
            self._tokenizer = Tokenizer.load(self.data_dir / "tokenizer.json")
        return self._tokenizer

    def __len__(self) -> int:
        return (self.n_tokens - self.n_context - 1) // self.stride + 1

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(input, target): int64 tensors of shape (n_context,)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"window {index} out of range for {len(self)} windows")
        start = (index % len(self)) * self.stride
        chunk = torch.from_numpy(self.read(start, self.n_context + 1))     # (T + 1,)
        return chunk[:-1], chunk[1:]

    def read(self, start: int, length: int) -> np.ndarray:
        """stream[start : start + length] as int64, reading only those tokens."""
        if self._maps is None:
            self._maps = [_open_random_access(p) for p in self.paths]
            self._reads = 0
        self._reads += 1
        if self._reads % RELEASE_EVERY == 0:
            _release(self._maps)
        out = np.empty(length, dtype=np.int64)
        k = int(np.searchsorted(self.offsets, start, side="right")) - 1
        filled = 0
        while filled < length:                    # a window crossing into the next shard
            local = start + filled - int(self.offsets[k])
            piece = self._maps[k][local:local + length - filled]
            out[filled:filled + len(piece)] = piece
            filled += len(piece)
            k += 1
        return out

    def __getstate__(self) -> dict:
        # Pickling a memmap would copy the whole file; DataLoader workers re-open it instead.
        # The tokenizer (megabytes pickled, for a large vocabulary) is left out too: workers
        # only read windows, and a copy that asks reloads data_dir/tokenizer.json.
        return {**self.__dict__, "_maps": None, "_tokenizer": None}


def _open_random_access(path: Path) -> np.ndarray:
    tokens = open_shard(path)
    # Training reads small windows at random places: read-ahead would only waste disk reads.
    mapping = getattr(tokens, "_mmap", None)
    if mapping is not None and hasattr(mmap, "MADV_RANDOM"):
        mapping.madvise(mmap.MADV_RANDOM)
    return tokens


def _release(maps: list) -> None:
    """Unmap the pages read so far from this process (they stay in the OS page cache).

    A page of a mapped file counts in the process's resident memory from the first read until
    the mapping is closed, and Linux maps a whole page-cache folio (up to megabytes) around
    each faulting read. Random windows would thus make RSS grow towards the corpus size;
    MADV_DONTNEED on a read-only file mapping only drops the page-table entries, so the next
    read simply maps the page again. benchmarks/bench_data.py measures the effect.
    """
    for tokens in maps:
        mapping = getattr(tokens, "_mmap", None)
        if mapping is not None and hasattr(mmap, "MADV_DONTNEED"):
            mapping.madvise(mmap.MADV_DONTNEED)


class ResumableSampler(Sampler[int]):
    """Every index 0..n-1 exactly once per epoch, in a seeded random order, resumable.

        sampler = ResumableSampler(dataset, seed=0)
        loader = DataLoader(dataset, batch_size=32, sampler=sampler)
        ...                                  # train for a while, then checkpoint:
        state = sampler.state_dict()         # {"seed": 0, "epoch": 1, "position": 96, ...}
        sampler.load_state_dict(state)       # later: continue exactly where it stopped

    Epoch e visits the permutation drawn by numpy's PCG64 from the seed sequence (seed, e).
    `position` counts the indices handed out in the current epoch. Iterating again after a
    break continues the same epoch; finishing it moves to the next epoch.

    With DataLoader(num_workers=0) the position is exactly batches_consumed * batch_size.
    Worker processes fetch batches ahead, so the sampler is ahead of the training loop by the
    prefetched batches; pass the count the loop actually consumed:
    `state_dict(position=batches_done_this_epoch * batch_size)`.
    """

    def __init__(self, data_source: Sized | int, seed: int = 0) -> None:
        n = data_source if isinstance(data_source, int) else len(data_source)
        if n < 1:
            raise ValueError(f"the sampler needs at least one item, got {n}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.n = n
        self.seed = seed
        self.epoch = 0
        self.position = 0

    def permutation(self, epoch: int) -> np.ndarray:
        """The order of epoch `epoch`: a permutation of 0..n-1, (n,) int64."""
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        order = self.permutation(self.epoch)
        while self.position < self.n:
            index = int(order[self.position])
            self.position += 1
            yield index
        self.epoch += 1
        self.position = 0

    def state_dict(self, position: int | None = None) -> dict:
        """The sampler's place as a small JSON-able dict; `position` overrides the count of
        indices handed out in this epoch (see the class docstring about prefetching)."""
        position = self.position if position is None else position
        if not 0 <= position <= self.n:
            raise ValueError(f"position must be in 0..{self.n}, got {position}")
        return {"seed": self.seed, "epoch": self.epoch, "position": position, "n": self.n}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a `state_dict()`; the dataset must have the same number of items."""
        missing = {"seed", "epoch", "position", "n"} - set(state)
        if missing:
            raise ValueError(f"sampler state lacks {sorted(missing)}; expected a dict from "
                             "ResumableSampler.state_dict()")
        if state["n"] != self.n:
            raise ValueError(f"sampler state is for {state['n']} items but this dataset has "
                             f"{self.n}; resume with the same data and n_context")
        if not 0 <= state["position"] <= self.n or state["epoch"] < 0:
            raise ValueError(f"sampler state {state} is out of range")
        self.seed, self.epoch, self.position = state["seed"], state["epoch"], state["position"]
