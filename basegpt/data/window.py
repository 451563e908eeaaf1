"""SlidingWindowDataset: the original design's dataset, texts in memory -> (input, target) pairs.

A language model learns to predict token t+1 from tokens 0..t, so one training sample is a
window of n_context + 1 consecutive tokens: the first n_context are the input, the last
n_context (the same tokens shifted by one) are the target. This module cuts token streams
into such windows, pads the last one, and marks padded targets with IGNORE_INDEX so they
never count in the loss (torch's cross_entropy skips targets equal to its ignore_index,
-100 by default).

For corpora that do not fit in memory, see `shards.py` (token files on disk) and
`memmap.py` (the same windows read from those files).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from basegpt.tokenizer import Tokenizer

IGNORE_INDEX = -100
"""Target value for positions that must not count in the loss (torch cross_entropy's default)."""


def window_starts(n_tokens: int, n_context: int, stride: int) -> list[int]:
    """Where the windows of one stream of `n_tokens` tokens start.

    A window of n_context inputs needs n_context + 1 tokens (the target is the input shifted
    by one). Windows start at 0, stride, 2*stride, ...; the window that reaches the end of
    the stream is the last one (it is padded if it is short), and no window is made that
    would hold no real target (a start at the stream's last token, or past it).

        window_starts(10, 4, 4) -> [0, 4, 8]     tokens 0-4, 4-8, 8-9 (+3 pads)
        window_starts(10, 4, 2) -> [0, 2, 4, 6]  6-9 + 1 pad reaches the end: stop
        window_starts(10, 2, 5) -> [0, 5]        stride > n_context skips tokens 3-4, 8-9
        window_starts(1, 4, 4)  -> []            one token has no next token to predict
    """
    starts = []
    start = 0
    while start + 1 < n_tokens:                   # at least one real target
        starts.append(start)
        if start + n_context + 1 >= n_tokens:     # this window reaches the end of the stream
            break
        start += stride
    return starts


class SlidingWindowDataset(Dataset):
    """Fixed-length (input, target) windows over one or more texts, held in memory.

    Args:
        tokenizer: encodes the texts; its pad_id fills short windows and its eot_id joins
            texts when join_texts=True.
        n_context: input length T of every sample.
        texts: a list of strings (a single string is refused: wrap it as texts=[text]).
        stride: tokens between the starts of consecutive windows; default n_context
            (non-overlapping windows; a smaller stride makes them overlap).
        join_texts: False (default): each text is its own stream and no window mixes two
            texts. True: the texts become one stream, t1 <eot> t2 <eot> ... tn, so windows
            run across text boundaries and the model learns where a text ends.

    Each item is (input, target), two int64 tensors of shape (T,), target[i] = input[i + 1]
    of the underlying stream. Windows are cut as in `window_starts`; in a short window the
    missing inputs are pad_id and the missing targets IGNORE_INDEX (-100). Worked example,
    with the byte-level ids of an untrained tokenizer ("a" = 97, pad = 257):

        SlidingWindowDataset(tokenizer=tok, n_context=4, texts=["abcdefghij"])
        stream 97..106 (10 tokens), windows start at 0, 4, 8:
          [0] input [97, 98, 99, 100]      target [98, 99, 100, 101]
          [1] input [101, 102, 103, 104]   target [102, 103, 104, 105]
          [2] input [105, 106, 257, 257]   target [106, -100, -100, -100]

    A text shorter than one window gives one padded sample; a text of one token gives none
    (nothing to predict). Raises ValueError if no text yields a window (an empty corpus).
    """

    def __init__(self, tokenizer: Tokenizer, n_context: int, texts: Sequence[str],
                 stride: int | None = None, join_texts: bool = False) -> None:
        if not callable(getattr(tokenizer, "encode", None)):
            raise TypeError(f"tokenizer must be a basegpt Tokenizer, got "
                            f"{type(tokenizer).__name__}; e.g. Tokenizer.load('tokenizer.json')")
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, got one str (which would be "
                            "read character by character); pass texts=[text]")
        if isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Iterable):
            raise TypeError(f"texts must be a list of strings, got {type(texts).__name__}; "
                            "pass texts=[text, ...]")
        for name, value in (("n_context", n_context), ("stride", stride)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        texts = list(texts)
        if not all(isinstance(t, str) for t in texts):
            bad = next(t for t in texts if not isinstance(t, str))
            raise TypeError(f"texts must all be str, got a {type(bad).__name__}")
        self.tokenizer = tokenizer        # training uses it for bits per byte and run dirs
        self.n_context = n_context
        self.stride = stride if stride is not None else n_context
        self.join_texts = join_texts

        streams = [tokenizer.encode(text) for text in texts]
        if join_texts:
            joined: list[int] = []
            for i, ids in enumerate(streams):
                joined += ([tokenizer.eot_id] if i else []) + ids
            streams = [joined]
        # All streams in one flat array; a window is (start, end of its stream) in it.
        lengths = [len(ids) for ids in streams]
        self.tokens = torch.tensor([t for ids in streams for t in ids], dtype=torch.int64)
        offsets = np.cumsum([0] + lengths)
        starts, ends = [], []
        for offset, length in zip(offsets, lengths):
            for start in window_starts(length, n_context, self.stride):
                starts.append(offset + start)
                ends.append(offset + length)
        if not starts:
            raise ValueError(f"the corpus is empty: {len(texts)} text(s) with "
                             f"{sum(lengths)} tokens in all, and a sample needs a text of at "
                             "least 2 tokens; pass texts=[...] with some text in it")
        self.starts = torch.tensor(starts, dtype=torch.int64)            # (N,)
        self.ends = torch.tensor(ends, dtype=torch.int64)                # (N,)
        needs_padding = bool((self.ends - self.starts < n_context + 1).any())
        self.pad_id = tokenizer.pad_id if needs_padding else None

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(input, target): int64 tensors of shape (n_context,)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"window {index} out of range for {len(self)} windows")
        T = self.n_context
        start, end = int(self.starts[index]), int(self.ends[index])
        chunk = self.tokens[start:min(start + T + 1, end)]               # (<= T + 1,)
        n_real = len(chunk)
        x = torch.full((T,), self.pad_id if n_real < T + 1 else 0, dtype=torch.int64)
        y = torch.full((T,), IGNORE_INDEX, dtype=torch.int64)
        x[:min(n_real, T)] = chunk[:T]
        y[:n_real - 1] = chunk[1:]
        return x, y
