"""Tokenizer training as a pipeline: stream the corpus, count unique chunks, learn merges.

Memory grows with the number of *unique* chunks, not with the corpus: texts are split and
counted one document (or one block of a large file) at a time, and only the counts are kept.
Large files are read in blocks that end where the split pattern is known to cut anyway
(`Splitter.safe_cut`), so the counts equal those of reading each file whole.

When the C extension was compiled (`basegpt.tokenizer._bpe`), both steps run in C: splitting
and counting for the built-in patterns (custom regexes are counted in Python), and the merge
loop. Otherwise `count_chunks` and the pure-Python `bpe_fast.train_fast` do the same job. All
give the same merges as `bpe_reference.train_reference` (tests/test_tokenizer_train.py and
tests/test_tokenizer_c.py check it).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from basegpt.corpus import expand_paths, read_text_pieces
from basegpt.progress import progress_bar
from basegpt.tokenizer.bpe_fast import train_fast
from basegpt.tokenizer.bpe_reference import Pair, train_reference
from basegpt.tokenizer.pretokenize import Splitter

try:  # the optional C extension; see setup.py
    from basegpt.tokenizer import _bpe
except ImportError:  # no compiler at install time: the pure-Python trainer does the same job
    _bpe = None

BACKENDS = ("auto", "c", "python", "reference")
BLOCK_CHARS = 1 << 20
"""Characters read at a time from a file while counting chunks."""

Source = str | os.PathLike


def iter_documents(sources: str | Source | Iterable[Source], splitter: Splitter,
                   block_chars: int = BLOCK_CHARS) -> Iterator[str]:
    """Yield the texts to split: strings as they are, files (Path objects) block by block.

    A plain `str` is always text, never a path: pass `pathlib.Path` objects for files. A
    folder is its files, found as the CLI finds them (`corpus.expand_paths`: recursive,
    sorted, hidden files skipped), each one document. A block ends at `splitter.safe_cut`, so
    the chunks do not depend on the block size; with no safe cut (pattern none or custom) a
    file is read whole.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    for source in sources:
        if isinstance(source, str):
            yield source
        elif isinstance(source, os.PathLike) and Path(source).is_dir():
            for path in expand_paths([source]):
                yield from _file_blocks(path, splitter, block_chars)
        elif isinstance(source, os.PathLike):
            yield from _file_blocks(Path(source), splitter, block_chars)
        else:
            raise TypeError(f"training input must be str (text) or a path, "
                            f"got {type(source).__name__}")


def _file_blocks(path: Path, splitter: Splitter, block_chars: int) -> Iterator[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file to train the tokenizer on")
    # Read as bytes and decoded here, so \r\n stays as written and a byte that is not
    # UTF-8 is reported with the file's name and its offset.
    yield from splitter.blocks(read_text_pieces(path, block_chars), block_chars)


def count_chunks(texts: Iterable[str], splitter: Splitter) -> Counter:
    """How often each chunk occurs: count_chunks(["a a a"], gpt4) -> {"a": 1, " a": 2}."""
    counts: Counter = Counter()
    for text in texts:
        counts.update(splitter.split(text))
    return counts


def learn_merges(texts: Iterable[str], splitter: Splitter, n_merges: int,
                 backend: str = "auto", progress: bool = True) -> list[Pair]:
    """Learn up to `n_merges` merges from `texts` with the chosen backend.

    backend: "auto" (C if compiled, else Python), "c", "python" (bpe_fast) or "reference"
    (bpe_reference: slow, for checking and teaching). All show the same tqdm bar of merges
    done unless progress is False.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown training backend {backend!r}; choose one of {BACKENDS}")
    if backend == "c" and _bpe is None:
        raise ValueError("backend 'c' needs the compiled extension basegpt.tokenizer._bpe, "
                         "which is not installed; reinstall with a C compiler or use 'python'")
    use_c = backend in ("auto", "c") and _bpe is not None
    if backend == "reference":    # every chunk as a string, as the reference reads them
        words = [chunk for text in texts for chunk in splitter.split(text)]
    else:                         # the unique chunks as UTF-8, and how often each occurs
        words, counts = _unique_words(texts, splitter, use_c)
    # No bar for no text: Tokenizer.train turns that into an error message instead.
    with progress_bar(n_merges, "BPE merges", "merge", show=progress and bool(words)) as bar:
        def on_merge(done: int) -> None:
            bar.update(done - bar.n)
        if backend == "reference":
            return train_reference(words, n_merges, on_merge)
        train = _bpe.train if use_c else train_fast
        return train(words, counts, n_merges, on_merge)


def _unique_words(texts: Iterable[str], splitter: Splitter,
                  use_c: bool) -> tuple[list[bytes], list[int]]:
    """The unique chunks as UTF-8 and how often each occurs: the merge loop's input."""
    if use_c and splitter.name in _bpe.PATTERNS:
        # Split and count in C: a Python object is made per unique chunk, not per chunk.
        counter = _bpe.ChunkCounter(splitter.name)
        for text in texts:
            counter.add(text)
        return counter.words_counts()
    counts = count_chunks(texts, splitter)
    return [chunk.encode("utf-8") for chunk in counts], list(counts.values())
