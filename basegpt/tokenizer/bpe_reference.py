"""Byte-level BPE, the readable way: the reference that the fast trainer must agree with.

Byte-pair encoding (Sennrich et al., 2016, applied to bytes as in GPT-2) builds a vocabulary
bottom-up. Start from the 256 byte values; count every adjacent pair of tokens; give the most
frequent pair a new id and replace it everywhere; repeat until the vocabulary is big enough.

    b"hihi!" -> ids [104, 105, 104, 105, 33]
    most frequent pair (104, 105) becomes token 256 -> ids [256, 256, 33]

Tie-break rule (the same on every machine and every run): among pairs with the highest
count, the smallest pair wins, comparing the left id first, then the right id.

This module is written for reading, not speed: every merge recounts every pair, so it costs
O(merges x corpus). `bpe_fast.py` gets the same merges far faster, and a property test holds
the two to the same answer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence

Pair = tuple[int, int]


def merge(ids: Sequence[int], pair: Pair, new_id: int) -> list[int]:
    """Replace each occurrence of `pair` in `ids` by `new_id`, scanning left to right.

        merge([1, 2, 3, 1, 2], (1, 2), 256) -> [256, 3, 256]
        merge([7, 7, 7], (7, 7), 256)       -> [256, 7]   (occurrences never overlap)
    """
    out: list[int] = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def most_frequent_pair(counts: Counter) -> Pair:
    """The pair with the highest count; ties go to the smallest (left id, right id)."""
    return min(counts, key=lambda pair: (-counts[pair], pair))


def train_reference(chunks: Iterable[str], n_merges: int,
                    on_merge: Callable[[int], None] | None = None) -> list[Pair]:
    """Learn up to `n_merges` merges from text chunks (merges never cross two chunks).

    `chunks` is the corpus already cut by a Splitter (or whole documents, for no split).
    Merge i creates token id 256 + i. Stops early when no pair is left. `on_merge(done)`, if
    given, is called after each merge with the number done so far (for a progress bar).
    """
    words = [list(chunk.encode("utf-8")) for chunk in chunks]
    merges: list[Pair] = []
    for new_id in range(256, 256 + n_merges):
        counts: Counter = Counter()
        for ids in words:
            counts.update(zip(ids, ids[1:]))      # every adjacent pair, overlaps included
        if not counts:
            break                                 # every chunk is a single token: done
        pair = most_frequent_pair(counts)
        words = [merge(ids, pair, new_id) for ids in words]
        merges.append(pair)
        if on_merge is not None:
            on_merge(len(merges))
    return merges
