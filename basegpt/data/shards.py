"""Token shards: the on-disk format of a tokenized corpus, and its writer and reader.

A corpus bigger than memory is stored as a few large files of token ids ("shards"). Each is

    offset  size  field
         0     8  magic b"BGPTTOK\\0" (says: this is a basegpt token shard)
         8     4  format version, uint32 little-endian (FORMAT_VERSION)
        12     4  dtype code, uint32: 2 = uint16 tokens, 4 = uint32 tokens (the item size)
        16     8  token count N, uint64
        24   N*k  the tokens, little-endian, k = 2 or 4 bytes each

uint16 halves the size (and the disk reads) whenever the vocabulary has at most 65,536 ids,
which covers every GPT-2-sized tokenizer; bigger vocabularies get uint32. The header is 24
bytes, a multiple of 8, so the token array is aligned for either dtype and `np.memmap` can
view it in place, without reading the file into RAM.

Shards are written by streaming into a temporary file that is renamed when complete (the
same atomic-write rule as `basegpt._io`), so a crash never leaves a half-written shard
under a shard's name.
"""

from __future__ import annotations

import contextlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from basegpt._io import errors_name, fsync_dir, open_temp

MAGIC = b"BGPTTOK\0"
FORMAT_VERSION = 1
HEADER = struct.Struct("<8sIIQ")        # magic, version, dtype code, token count
HEADER_SIZE = HEADER.size               # 24
DTYPES: dict[int, np.dtype] = {2: np.dtype("<u2"), 4: np.dtype("<u4")}
"""dtype code (the item size in bytes) -> numpy dtype of the tokens."""


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """The smallest token dtype for ids 0..vocab_size-1: uint16 up to 65,536, else uint32.

        dtype_for_vocab(50257) -> uint16     dtype_for_vocab(100277) -> uint32
    """
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    if vocab_size > 1 << 32:
        raise ValueError(f"vocab_size {vocab_size} does not fit uint32 token ids")
    return DTYPES[2] if vocab_size <= 1 << 16 else DTYPES[4]


@dataclass(frozen=True)
class ShardHeader:
    """What a shard's first 24 bytes say."""
    version: int
    dtype: np.dtype
    n_tokens: int


def read_header(path: str | os.PathLike) -> ShardHeader:
    """Read and check a shard's header: magic, version, dtype, and that the file holds
    exactly the tokens the header counts. Errors name the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: token shard not found; re-run `basegpt prepare`")
    with open(path, "rb") as f:
        raw = f.read(HEADER_SIZE)
    if len(raw) < HEADER_SIZE:
        raise ValueError(f"{path} is truncated: {len(raw)} bytes, shorter than the "
                         f"{HEADER_SIZE}-byte shard header; re-run `basegpt prepare`")
    magic, version, code, n_tokens = HEADER.unpack(raw)
    if magic != MAGIC:
        raise ValueError(f"{path} is not a basegpt token shard (magic {magic!r}, expected "
                         f"{MAGIC!r}); point at the output of `basegpt prepare`")
    if version != FORMAT_VERSION:
        raise ValueError(f"{path} has shard format version {version}; this basegpt reads "
                         f"version {FORMAT_VERSION}: re-run `basegpt prepare` (or upgrade)")
    if code not in DTYPES:
        raise ValueError(f"{path} has unknown token dtype code {code} (expected "
                         f"{sorted(DTYPES)}); the header is corrupt, re-run `basegpt prepare`")
    expected = HEADER_SIZE + n_tokens * code
    size = path.stat().st_size
    if size != expected:
        raise ValueError(f"{path} is {size} bytes but its header promises {n_tokens} tokens "
                         f"({expected} bytes): the file is truncated or corrupt; re-run "
                         "`basegpt prepare`")
    return ShardHeader(version=version, dtype=DTYPES[code], n_tokens=n_tokens)


def open_shard(path: str | os.PathLike) -> np.memmap | np.ndarray:
    """The tokens of a shard as a read-only memory map (nothing is read until used)."""
    header = read_header(path)
    if header.n_tokens == 0:      # np.memmap refuses to map zero bytes
        return np.zeros(0, dtype=header.dtype)
    return np.memmap(path, dtype=header.dtype, mode="r", offset=HEADER_SIZE,
                     shape=(header.n_tokens,))


def write_shard(path: str | os.PathLike, tokens: np.ndarray | list[int],
                dtype: np.dtype | str) -> None:
    """Write one complete shard atomically (for small data and tests; `ShardWriter` streams)."""
    with ShardWriter(Path(path).parent, Path(path).name, dtype, shard_tokens=None) as writer:
        writer.write(np.asarray(tokens))
    if writer.paths != [Path(path)]:
        raise AssertionError(f"write_shard wrote {writer.paths}, expected [{path}]")


class ShardWriter:
    """Streams tokens into numbered shards of at most `shard_tokens` tokens each.

        with ShardWriter(out_dir, "train_{:06d}.bin", "uint16", 100_000_000) as w:
            w.write(ids)            # any number of times
        w.paths, w.counts          # the shards written and their token counts

    `name` is a format string taking the shard number (or a plain name when shard_tokens is
    None: one shard). Memory stays bounded by the arrays passed to write(): tokens go
    straight to a temporary file, which is renamed to its shard name once full or closed.
    """

    def __init__(self, out_dir: str | os.PathLike, name: str, dtype: np.dtype | str,
                 shard_tokens: int | None = 100_000_000) -> None:
        self.out_dir = Path(out_dir)
        self.name = name
        self.dtype = np.dtype(dtype).newbyteorder("<")
        if self.dtype.itemsize not in DTYPES or self.dtype.kind != "u":
            raise ValueError(f"token dtype must be uint16 or uint32, got {self.dtype}")
        if shard_tokens is not None and shard_tokens < 1:
            raise ValueError(f"shard_tokens must be positive, got {shard_tokens}")
        self.shard_tokens = shard_tokens
        self.paths: list[Path] = []
        self.counts: list[int] = []
        self._file = None
        self._tmp: str | None = None
        self._count = 0
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def write(self, tokens: np.ndarray) -> None:
        """Append tokens (any integer array; values must fit the dtype)."""
        tokens = np.asarray(tokens)
        if tokens.size and (tokens.min() < 0 or tokens.max() > np.iinfo(self.dtype).max):
            raise ValueError(f"token ids {tokens.min()}..{tokens.max()} do not fit {self.dtype}")
        tokens = tokens.astype(self.dtype, copy=False)
        while tokens.size:
            if self._file is None:
                self._open()
            room = tokens.size if self.shard_tokens is None else self.shard_tokens - self._count
            part, tokens = tokens[:room], tokens[room:]
            with errors_name(self._next_path):
                self._file.write(part.tobytes())
            self._count += part.size
            if self.shard_tokens is not None and self._count == self.shard_tokens:
                self._finish()

    def close(self) -> None:
        """Finish the last shard. A stream with no tokens at all still gets one empty shard,
        so every split has a file to point at."""
        if self._file is None and not self.paths:
            self._open()
        if self._file is not None:
            self._finish()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        # Failed mid-shard: drop the temporary file. Closing flushes what is buffered, which
        # on a full disk fails again; the error already being raised says why.
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        if self._tmp is not None:
            Path(self._tmp).unlink(missing_ok=True)
            self._tmp = None

    @property
    def _next_path(self) -> Path:
        """The shard being written (or next to be): what a write error names."""
        name = self.name.format(len(self.paths)) if self.shard_tokens is not None else self.name
        return self.out_dir / name

    def _open(self) -> None:
        with errors_name(self._next_path):
            fd, self._tmp = open_temp(self.out_dir, prefix=".shard.", suffix=".tmp")
            self._file = os.fdopen(fd, "wb")
            self._file.write(HEADER.pack(MAGIC, FORMAT_VERSION, self.dtype.itemsize, 0))
        self._count = 0

    def _finish(self) -> None:
        f, path = self._file, self._next_path
        with errors_name(path):
            f.seek(0)
            f.write(HEADER.pack(MAGIC, FORMAT_VERSION, self.dtype.itemsize, self._count))
            f.flush()
            os.fsync(f.fileno())
            f.close()
            self._file = None
            os.replace(self._tmp, path)
            self._tmp = None
        fsync_dir(self.out_dir)
        self.paths.append(path)
        self.counts.append(self._count)
