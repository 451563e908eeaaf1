"""Byte-level BPE, the fast way: same merges as `bpe_reference`, without recounting.

The reference recounts every pair of the whole corpus for every merge. Three observations
make that unnecessary (the approach of HF tokenizers' BpeTrainer and of rustbpe):

1. Unique chunks. A corpus of millions of chunks has only tens of thousands of different
   ones. Train on (chunk, frequency) pairs: a chunk seen 900 times is merged once and
   counted with weight 900.
2. Incremental pair counts. A merge of (a, b) only changes pairs inside the chunks that
   contain (a, b). An index pair -> chunks finds them; for each such chunk the counts of its
   old pairs are subtracted and those of its new pairs added, times the chunk's frequency.
3. A priority queue with lazy invalidation. Every time a pair's count changes, push
   (-count, pair) onto a heap instead of searching all pairs for the maximum. Entries whose
   count is no longer current are skipped when they surface. Because the heap orders equal
   counts by the pair itself, ties go to the smallest pair, exactly as in the reference.

A C version of this same loop (`_bpe.c`) is used when it was compiled; this module stays as
the readable description of what the C code does and as the fallback where no compiler is.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable

from basegpt.tokenizer.bpe_reference import Pair


def train_fast(words: Iterable[bytes], counts: Iterable[int], n_merges: int,
               on_merge: Callable[[int], None] | None = None) -> list[Pair]:
    """Learn up to `n_merges` merges from unique chunks `words` seen `counts` times each.

    Gives exactly train_reference(chunks, n_merges) when each word appears in `chunks` as
    often as its count says. `on_merge(k)` is called after merge k (for progress bars).
    """
    words_ids = [list(word) for word in words]
    freqs = list(counts)
    pair_count: Counter = Counter()
    where: defaultdict[Pair, set[int]] = defaultdict(set)   # pair -> words that (may) hold it
    for w, ids in enumerate(words_ids):
        for pair in zip(ids, ids[1:]):
            pair_count[pair] += freqs[w]
            where[pair].add(w)
    heap = [(-count, pair) for pair, count in pair_count.items()]
    heapq.heapify(heap)

    merges: list[Pair] = []
    for new_id in range(256, 256 + n_merges):
        pair = _pop_most_frequent(heap, pair_count)
        if pair is None:
            break                                    # no pair left anywhere
        merges.append(pair)
        delta: Counter = Counter()
        for w in where.pop(pair):
            old = words_ids[w]
            new, starts = _merge_with_positions(old, pair, new_id)
            if not starts:
                continue                             # a stale index entry: pair already gone
            freq = freqs[w]
            # Only pairs touching a merged occurrence change; the rest of the word is as it was.
            for j in _touching(starts, len(old), width=2):
                delta[old[j], old[j + 1]] -= freq
            for k in _touching([i - m for m, i in enumerate(starts)], len(new), width=1):
                delta[new[k], new[k + 1]] += freq
                where[new[k], new[k + 1]].add(w)
            words_ids[w] = new
        for p, d in delta.items():
            if d:
                pair_count[p] += d
                if pair_count[p]:
                    heapq.heappush(heap, (-pair_count[p], p))
                else:
                    del pair_count[p]
        if on_merge is not None:
            on_merge(len(merges))
    return merges


def _pop_most_frequent(heap: list, pair_count: Counter) -> Pair | None:
    """Pop heap entries until one holds a pair's current count; None when the heap empties."""
    while heap:
        neg_count, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) == -neg_count:
            return pair
    return None


def _merge_with_positions(ids: list[int], pair: Pair, new_id: int) -> tuple[list[int], list[int]]:
    """bpe_reference.merge, also returning where each replaced occurrence started in `ids`.

        _merge_with_positions([1, 2, 3, 1, 2], (1, 2), 256) -> ([256, 3, 256], [0, 3])
    """
    a, b = pair
    out: list[int] = []
    starts: list[int] = []
    i, n = 0, len(ids)
    while i < n:
        if ids[i] == a and i + 1 < n and ids[i + 1] == b:
            starts.append(i)
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out, starts


def _touching(starts: list[int], length: int, width: int) -> list[int]:
    """Indices j of the pairs (ids[j], ids[j + 1]) that overlap a token span at `starts`.

    A span [i, i + width) is touched by the pairs starting at i - 1 ... i + width - 1.
    Each index is listed once even when spans are adjacent, in increasing order.
        _touching([0, 2], length=5, width=2) -> [0, 1, 2, 3]
    """
    seen: list[int] = []
    for i in starts:
        for j in range(max(i - 1, seen[-1] + 1 if seen else 0), min(i + width, length - 1)):
            seen.append(j)
    return seen
