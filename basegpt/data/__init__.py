"""Data: from raw text to (input, target) batches, in memory or from token shards on disk.

    window.py    SlidingWindowDataset: the original design's dataset over texts in memory
    shards.py    the token-shard file format (header + uint16/uint32 ids), writer and reader
    pipeline.py  prepare(): files/folders/globs/named datasets -> shards, parallel, reproducible
    memmap.py    ShardDataset over the shards (np.memmap) and ResumableSampler (seeded, resumable)
    datasets.py  the named-dataset table (stdlib, shakespeare) and a verified cached download

The flow, small corpus:  texts -> SlidingWindowDataset -> DataLoader
          large corpus:  files -> prepare() -> shards -> ShardDataset + ResumableSampler
                         -> DataLoader

Names are imported on first use (PEP 562), as in `basegpt/__init__.py`: preparing shards and
downloading datasets need no torch, so `basegpt prepare` starts without importing it.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> module that defines it
_LAZY = {
    **dict.fromkeys(["DATASETS", "DownloadError", "NamedDataset", "cache_dir", "dataset_path",
                     "fetch_dataset"], "basegpt.data.datasets"),
    **dict.fromkeys(["ResumableSampler", "ShardDataset", "check_tokenizer", "load_meta"],
                    "basegpt.data.memmap"),
    **dict.fromkeys(["is_prepared", "prepare", "validation_documents"], "basegpt.data.pipeline"),
    **dict.fromkeys(["ShardWriter", "dtype_for_vocab", "open_shard", "read_header",
                     "write_shard"], "basegpt.data.shards"),
    **dict.fromkeys(["IGNORE_INDEX", "SlidingWindowDataset", "window_starts"],
                    "basegpt.data.window"),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'basegpt.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
