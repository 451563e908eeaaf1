"""prepare(): tokenize a corpus into token shards, in parallel, streaming, reproducibly.

    raw text (files, folders, globs, a named dataset, or the built-in corpus)
      -> documents (one per file) -> blocks of <= 1 Mi characters
      -> worker processes encode the blocks -> results collected *in input order*
      -> train / val streams: doc1 <eot> doc2 <eot> ... -> shards (see shards.py)
      -> out_dir/meta.json + out_dir/tokenizer.json

Why each step:
- Blocks: a large file is read in pieces that end where the split pattern cuts anyway
  (`Splitter.safe_cut`: after a letter or digit followed by another kind of character), so
  encoding block by block gives exactly the tokens of encoding the whole file, while memory
  stays bounded by (workers + a few) blocks. Text without such a place (one endless word)
  stays in one growing block. With pattern "none" or a custom regex no cut is known to be
  safe and a file is read whole. Either way, a block that grows past WARN_BLOCKS blocks
  gets a warning.
- Order: blocks are encoded in parallel but written in the order they were read, so the
  shards are byte-identical for any number of workers, and re-running gives the same bytes.
- Workers are started with the "spawn" method and call top-level functions, so this works
  the same on Linux, macOS and Windows; each loads the tokenizer once from its JSON text.

The validation split is by document, decided by a hash of the document's index, so it is
the same on every run and machine and no document is in both splits:

    rank documents by sha256("basegpt-val:<index>"); the round(val_fraction * n) lowest
    ranked are validation (at least one and never all, when val_fraction > 0 and n >= 2).

A corpus of a single document (tinyshakespeare) has no second document to hold out, so its
last val_fraction of bytes, starting at a line start, becomes the validation document.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import multiprocessing
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import numpy as np

from basegpt._io import atomic_write_text, check_writable, file_in_the_way, new_folder, staged
from basegpt.config import DEFAULT_VAL_FRACTION
from basegpt.corpus import DEFAULT_BUILTIN_BYTES, builtin_corpus, read_text_pieces, text_files
from basegpt.data.datasets import DEFAULT_DATASET, fetch_dataset, get_dataset
from basegpt.data.shards import ShardWriter, dtype_for_vocab
from basegpt.progress import progress_bar
from basegpt.tokenizer import Tokenizer
from basegpt.tokenizer.pretokenize import Splitter

META_FORMAT = "basegpt.tokens"
META_VERSION = 1
SPLITS = ("train", "val")
SHARD_NAME = "{split}_{{:06d}}.bin"          # train_000000.bin, val_000000.bin, ...
DEFAULT_SHARD_TOKENS = 100_000_000           # 200 MB of uint16 per shard
BLOCK_CHARS = 1 << 20
"""Characters per block of a file: the unit of work sent to a worker process."""
WARN_BLOCKS = 8
"""A block that grows past this many times block_chars without a safe cut gets a warning:
memory is then no longer bounded by a few blocks (see _blocks)."""
BYTES_PER_WORKER = 32_000_000
"""Default workers: one per this many bytes (at ~20 MB/s per process with the C encoder, a
worker must have a few seconds of work to repay its start-up)."""
_EOT = None
"""A task that is this marker (instead of text) means: append the end-of-text token."""

Document = Path | str
"""A file to read in blocks, or a text already in memory (the built-in corpus)."""


def prepare(inputs: Sequence[str | os.PathLike] | None, tokenizer: Tokenizer | str | os.PathLike,
            out_dir: str | os.PathLike, *, data: str | None = None,
            val_fraction: float = DEFAULT_VAL_FRACTION, workers: int | None = None,
            shard_tokens: int = DEFAULT_SHARD_TOKENS,
            max_bytes: int | None = DEFAULT_BUILTIN_BYTES,
            cache_dir: str | os.PathLike | None = None, block_chars: int = BLOCK_CHARS,
            progress: bool = True) -> dict:
    """Tokenize a corpus into `out_dir` and return the content of its meta.json.

    Args:
        inputs: UTF-8 text files, folders (recursive; hidden files and out_dir skipped) or
            glob patterns, each file one document; what a folder or a glob finds that is not
            UTF-8 text is skipped with a warning naming it. None or [] means the named
            dataset `data`.
        tokenizer: a Tokenizer or the path of a tokenizer.json.
        out_dir: a folder, created if needed; gets train_*.bin, val_*.bin, meta.json,
            tokenizer.json. Shards of an earlier run there are replaced once the new ones
            are all written (until then both take space); if prepare fails, out_dir is left
            as it was, or removed if prepare made it.
        data: a named dataset (see datasets.DATASETS) when no inputs are given; default
            "stdlib", the built-in corpus, capped at `max_bytes` bytes.
        val_fraction: share of documents held out for validation, 0 <= f < 1.
        workers: encoding processes; 1 encodes in this process. Default: os.cpu_count(),
            but only one per BYTES_PER_WORKER (32 MB) of text, where a process pays off.
        shard_tokens: most tokens per shard file (bounds the size of each file).
        progress: show a tqdm bar with the MB/s read.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)                   # before minutes of tokenizing, not after
    if not isinstance(tokenizer, Tokenizer):
        tokenizer = Tokenizer.load(tokenizer)
    documents, described = resolve_documents(inputs, data, max_bytes, cache_dir,
                                             exclude=[out_dir])
    dtype = dtype_for_vocab(len(tokenizer))
    val_docs = validation_documents(len(documents), val_fraction)
    tail_fraction = val_fraction if len(documents) == 1 else 0.0
    total_bytes = sum(_n_bytes(doc) for doc in documents)
    if workers is None:
        # Starting a process costs seconds (it imports torch with basegpt), so small corpora
        # are encoded faster here; the output is the same for any number of workers.
        workers = max(1, min(os.cpu_count() or 1, total_bytes // BYTES_PER_WORKER))

    start = time.perf_counter()
    tasks = _tasks(documents, val_docs, tail_fraction, tokenizer.splitter, block_chars)
    # Everything goes into a hidden folder first and moves into out_dir once complete, so an
    # error (a bad file, a full disk, Ctrl-C) leaves the shards of an earlier run whole, and
    # takes out_dir away again if it was made here.
    with new_folder(out_dir), staged(out_dir, commit_record="meta.json") as stage:
        writers, n_documents = _write_shards(stage, tasks, tokenizer, dtype, shard_tokens,
                                             workers, total_bytes, progress)
        if not any(n_documents.values()):
            raise ValueError(f"the corpus is empty: {len(documents)} document(s) with no text "
                             f"in {', '.join(described)}; give files that contain text")
        seconds = time.perf_counter() - start
        tokenizer.save(stage / "tokenizer.json")
        meta = _meta(tokenizer, dtype, described, val_fraction, total_bytes, n_documents, writers)
        atomic_write_text(stage / "meta.json", json.dumps(meta, indent=2) + "\n")
    _remove_stale_shards(out_dir, writers)
    # Timing and workers are returned, not stored: meta.json stays byte-identical across re-runs.
    return {**meta, "seconds": seconds, "workers": workers}


def _check_out_dir(out_dir: Path) -> None:
    """An error now, naming it, for an output folder that cannot be made or written."""
    blocker = file_in_the_way(out_dir)
    if blocker is not None:
        raise ValueError(f"cannot write shards into {out_dir}: {blocker} is a file, not a "
                         "folder; choose a new output folder (or one holding earlier shards)")
    check_writable(out_dir)


def _meta(tokenizer: Tokenizer, dtype: np.dtype, described: list[str], val_fraction: float,
          total_bytes: int, n_documents: dict[str, int],
          writers: dict[str, ShardWriter]) -> dict:
    """The content of meta.json: what made the shards, and what each holds."""
    return {
        "format": META_FORMAT, "version": META_VERSION,
        "tokenizer_hash": tokenizer.hash, "vocab_size": len(tokenizer),
        "eot_id": tokenizer.eot_id, "dtype": dtype.name,
        "inputs": described, "val_fraction": val_fraction,
        "val_rule": "by document: sha256('basegpt-val:<index>') rank; one document: its tail",
        "bytes": total_bytes,
        "documents": n_documents,
        "tokens": {split: sum(w.counts) for split, w in writers.items()},
        "shards": {split: [{"file": p.name, "tokens": n} for p, n in zip(w.paths, w.counts)]
                   for split, w in writers.items()},
    }


def _remove_stale_shards(out_dir: Path, writers: dict[str, ShardWriter]) -> None:
    """Remove the shards of an earlier, longer run that this one did not write over."""
    written = {p.name for w in writers.values() for p in w.paths}
    for split in SPLITS:
        for stale in out_dir.glob(f"{split}_*.bin"):
            if stale.name not in written:
                stale.unlink()


def _write_shards(folder: Path, tasks: Iterator[tuple[str, str | None, int]],
                  tokenizer: Tokenizer, dtype: np.dtype, shard_tokens: int, workers: int,
                  total_bytes: int, progress: bool,
                  ) -> tuple[dict[str, ShardWriter], dict[str, int]]:
    """Encode the tasks and stream the tokens into each split's shards in `folder`; returns
    the (closed) writers, which know their shards, and the documents of each split."""
    n_documents = dict.fromkeys(SPLITS, 0)
    eot = np.array([tokenizer.eot_id], dtype=dtype)
    # The writers as context managers: an error (a bad file, Ctrl-C) deletes the shard
    # being written instead of leaving a temporary file behind.
    with contextlib.ExitStack() as stack:
        writers = {split: stack.enter_context(ShardWriter(
            folder, SHARD_NAME.format(split=split), dtype, shard_tokens)) for split in SPLITS}
        bar = stack.enter_context(progress_bar(total_bytes, "prepare", "B", show=progress,
                                               unit_scale=True))
        for (split, text, n_bytes), tokens in _encode_in_order(tasks, tokenizer, workers):
            if text is _EOT:
                writers[split].write(eot)
                n_documents[split] += 1
            else:
                writers[split].write(tokens)
                bar.update(n_bytes)
    return writers, n_documents


def resolve_documents(inputs: Sequence[str | os.PathLike] | None, data: str | None,
                      max_bytes: int | None = DEFAULT_BUILTIN_BYTES,
                      cache_dir: str | os.PathLike | None = None,
                      exclude: Sequence[str | os.PathLike] = (),
                      ) -> tuple[list[Document], list[str]]:
    """The documents to tokenize, and how to describe them in meta.json.

    Files, folders and globs give one document per file (missing ones raise
    FileNotFoundError; folders and globs skip what is under `exclude`, and with a warning
    what is not UTF-8 text, see corpus.text_files); no inputs give the named dataset `data`
    (default "stdlib").
    """
    if inputs and data is not None:
        raise ValueError(f"give input files or a named dataset (data={data!r}), not both")
    if inputs:
        if isinstance(inputs, (str, os.PathLike)):
            inputs = [inputs]
        return text_files(inputs, exclude), [str(item) for item in inputs]
    name = data if data is not None else DEFAULT_DATASET
    dataset = get_dataset(name)
    if dataset.url is None:      # the built-in corpus
        return list(builtin_corpus(max_bytes)), [f"data:{name} (max_bytes={max_bytes})"]
    return [fetch_dataset(name, cache_dir)], [f"data:{name} (sha256 {dataset.sha256})"]


def is_prepared(folder: str | os.PathLike) -> bool:
    """Whether `folder` holds what prepare() writes: a meta.json of this format (the shards
    themselves are checked when read, by memmap.ShardDataset)."""
    try:
        meta = json.loads((Path(folder) / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):            # no such file, a folder, not UTF-8, not JSON
        return False
    return isinstance(meta, dict) and meta.get("format") == META_FORMAT


def validation_documents(n_documents: int, val_fraction: float) -> set[int]:
    """Indices of the documents held out for validation (see the module docstring).

        validation_documents(10, 0.2) -> 2 of the 10 indices, the same on every call
        validation_documents(1, 0.1)  -> set()  (prepare then holds out the tail instead)
    """
    if val_fraction <= 0 or n_documents < 2:
        return set()
    k = min(max(round(val_fraction * n_documents), 1), n_documents - 1)
    rank = sorted(range(n_documents),
                  key=lambda i: hashlib.sha256(f"basegpt-val:{i}".encode()).digest())
    return set(rank[:k])


# ------------------------------------------------------------------------ reading

def _n_bytes(doc: Document) -> int:
    return doc.stat().st_size if isinstance(doc, Path) else len(doc.encode("utf-8"))


def _tasks(documents: list[Document], val_docs: set[int], tail_fraction: float,
           splitter: Splitter, block_chars: int) -> Iterator[tuple[str, str | None, int]]:
    """(split, text block, its bytes) in reading order; (split, _EOT, 0) ends a document.

    Empty documents give nothing (not even an end-of-text token).
    """
    for index, doc in enumerate(documents):
        split = "val" if index in val_docs else "train"
        train_bytes = _n_bytes(doc) - round(_n_bytes(doc) * tail_fraction)
        done, started = 0, False
        for block, n_bytes in _blocks(doc, splitter, block_chars):
            if tail_fraction and split == "train" and done + n_bytes > train_bytes:
                # The single-document case: cut at the line start nearest before the
                # byte budget; what follows is the validation document.
                head_chars = len(block.encode("utf-8")[:train_bytes - done]
                                 .decode("utf-8", errors="ignore"))
                cut = block.rfind("\n", 0, head_chars) + 1 or head_chars
                head, block = block[:cut], block[cut:]
                if head:
                    yield split, head, len(head.encode("utf-8"))
                    started = True
                if started:
                    yield split, _EOT, 0
                split, started = "val", False
                n_bytes = len(block.encode("utf-8"))
            done += n_bytes
            if block:
                yield split, block, n_bytes
                started = True
        if started:
            yield split, _EOT, 0


def _blocks(doc: Document, splitter: Splitter, block_chars: int) -> Iterator[tuple[str, int]]:
    """(text, n_bytes) blocks of one document, each ending at a safe cut of the split pattern.

    Files are decoded as strict UTF-8 in pieces, so a bad byte is reported with the file
    name and its byte offset. A block grows until a safe cut turns up (none ever does for
    pattern "none" or a custom one); past WARN_BLOCKS * block_chars characters without one,
    a warning says that the file is being read into memory whole.
    """
    pieces = (read_text_pieces(doc, block_chars) if isinstance(doc, Path)
              else (doc[i:i + block_chars] for i in range(0, len(doc), block_chars)))
    warned = False

    def on_no_cut(n_chars: int) -> None:
        nonlocal warned
        if n_chars > WARN_BLOCKS * block_chars and isinstance(doc, Path) and not warned:
            warnings.warn(_no_cut_message(doc, splitter, n_chars))
            warned = True
    for block in splitter.blocks(pieces, block_chars, on_no_cut):
        yield block, len(block.encode("utf-8"))


def _no_cut_message(path: Path, splitter: Splitter, n_chars: int) -> str:
    if splitter.name in ("gpt2", "gpt4"):
        why = ("it has no letter or digit followed by another kind of character, where the "
               f"{splitter.name} split pattern is known to cut")
    elif splitter.name == "none":
        why = "split pattern 'none' merges across the whole document"
    else:
        why = "no safe cut is known for a custom split pattern"
    return (f"{path}: {n_chars:,} characters without a safe place to cut ({why}); the file "
            "is read into memory whole until one turns up, so memory grows with its size")


# ------------------------------------------------------------------------ encoding

_worker_tokenizer: Tokenizer | None = None
_worker_dtype: np.dtype | None = None


def _init_worker(tokenizer_json: str) -> None:
    """Runs once in each worker process: rebuild the tokenizer from its JSON text."""
    global _worker_tokenizer, _worker_dtype
    _worker_tokenizer = Tokenizer.from_dict(json.loads(tokenizer_json))
    _worker_dtype = dtype_for_vocab(len(_worker_tokenizer))


def _encode_batch(texts: list[str | None]) -> list[np.ndarray]:
    """Encode a batch of blocks in a worker; compact arrays pickle far smaller than lists."""
    return [np.array(_worker_tokenizer.encode(text) if text is not _EOT else [],
                     dtype=_worker_dtype) for text in texts]


def _batches(tasks: Iterator[tuple], batch_chars: int) -> Iterator[list[tuple]]:
    """Group consecutive tasks into lists of about `batch_chars` characters: one message per
    batch instead of one per (often small) document keeps the inter-process cost low."""
    batch, size = [], 0
    for task in tasks:
        batch.append(task)
        size += len(task[1]) if task[1] is not _EOT else 0
        if size >= batch_chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _encode_in_order(tasks: Iterator[tuple[str, str | None, int]], tokenizer: Tokenizer,
                     workers: int, batch_chars: int = BLOCK_CHARS,
                     ) -> Iterator[tuple[tuple[str, str | None, int], np.ndarray]]:
    """(task, tokens) for every task, in task order, encoding with `workers` processes.

    At most 2 * workers batches are in flight, so memory is bounded however large the corpus.
    """
    dtype = dtype_for_vocab(len(tokenizer))
    if workers == 1:
        for task in tasks:
            text = task[1]
            yield task, np.array(tokenizer.encode(text) if text is not _EOT else [], dtype=dtype)
        return
    context = multiprocessing.get_context("spawn")
    pending: collections.deque[tuple[list[tuple], Future]] = collections.deque()
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                             initargs=(tokenizer.to_json(),)) as pool:
        for batch in _batches(tasks, batch_chars):
            pending.append((batch, pool.submit(_encode_batch, [task[1] for task in batch])))
            while len(pending) > 2 * workers:
                done, future = pending.popleft()
                yield from zip(done, future.result())
        while pending:
            done, future = pending.popleft()
            yield from zip(done, future.result())
