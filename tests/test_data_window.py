"""SlidingWindowDataset: exact windows, targets and padding, texts kept apart or joined.

The tokenizer is an untrained Tokenizer(vocab_size=260): no merges, so every id is a UTF-8
byte ("a" -> 97) and the special tokens follow the bytes: end-of-text 256, pad 257. Every
expected window below can be checked by hand.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from basegpt import SlidingWindowDataset, Tokenizer, builtin_corpus
from basegpt.data import IGNORE_INDEX, window_starts

EOT, PAD, X = 256, 257, IGNORE_INDEX


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    tokenizer = Tokenizer(vocab_size=260)
    assert (tokenizer.eot_id, tokenizer.pad_id) == (EOT, PAD), "byte-level ids as assumed"
    return tokenizer


def windows(dataset: SlidingWindowDataset) -> list[tuple[list[int], list[int]]]:
    return [(x.tolist(), y.tolist()) for x, y in (dataset[i] for i in range(len(dataset)))]


@pytest.mark.parametrize("n_tokens, n_context, stride, expected", [
    (10, 4, 4, [0, 4, 8]),
    (9, 4, 4, [0, 4]),             # 4..8 is a full window (5 tokens) that reaches the end
    (10, 4, 2, [0, 2, 4, 6]),      # 6..9 reaches the end; a start at 8 would repeat targets
    (10, 2, 5, [0, 5]),            # stride > n_context: tokens in the gaps are skipped
    (3, 8, 8, [0]),
    (1, 4, 4, []),                 # one token: nothing to predict
    (0, 4, 4, []),
])
def test_window_starts(n_tokens, n_context, stride, expected):
    assert window_starts(n_tokens, n_context, stride) == expected, \
        f"starts for {n_tokens} tokens, n_context={n_context}, stride={stride}"


def test_default_stride_non_overlapping_last_padded(tok):
    ds = SlidingWindowDataset(tokenizer=tok, n_context=4, texts=["abcdefghij"])
    assert windows(ds) == [
        ([97, 98, 99, 100], [98, 99, 100, 101]),
        ([101, 102, 103, 104], [102, 103, 104, 105]),
        ([105, 106, PAD, PAD], [106, X, X, X]),
    ], "the docstring's worked example"


def test_overlapping_stride(tok):
    ds = SlidingWindowDataset(tokenizer=tok, n_context=4, texts=["abcdefghij"], stride=2)
    assert windows(ds) == [
        ([97, 98, 99, 100], [98, 99, 100, 101]),
        ([99, 100, 101, 102], [100, 101, 102, 103]),
        ([101, 102, 103, 104], [102, 103, 104, 105]),
        ([103, 104, 105, 106], [104, 105, 106, X]),
    ], "stride 2: windows overlap by half; the last reaches the end with one padded target"


def test_exact_fit_has_no_padding(tok):
    ds = SlidingWindowDataset(tokenizer=tok, n_context=4, texts=["abcde"])
    assert windows(ds) == [([97, 98, 99, 100], [98, 99, 100, 101])], \
        "n_context + 1 tokens make exactly one full window"


def test_short_text_gives_one_padded_sample(tok):
    ds = SlidingWindowDataset(tokenizer=tok, n_context=6, texts=["abc"])
    assert windows(ds) == [([97, 98, 99, PAD, PAD, PAD], [98, 99, X, X, X, X])], \
        "a text shorter than one window is one padded sample"


def test_texts_are_separate_streams_by_default(tok):
    ds = SlidingWindowDataset(tokenizer=tok, n_context=4, texts=["abc", "xyz"])
    assert windows(ds) == [
        ([97, 98, 99, PAD], [98, 99, X, X]),
        ([120, 121, 122, PAD], [121, 122, X, X]),
    ], "no window mixes two texts"


def test_join_texts_puts_end_of_text_between(tok):
    ds = SlidingWindowDataset(tokenizer=tok, n_context=4, texts=["abc", "xyz"], join_texts=True)
    assert windows(ds) == [
        ([97, 98, 99, EOT], [98, 99, EOT, 120]),
        ([120, 121, 122, PAD], [121, 122, X, X]),
    ], "joined: abc <eot> xyz as one stream"


def test_one_token_texts_are_skipped(tok):
    ds = SlidingWindowDataset(tokenizer=tok, n_context=3, texts=["a", "", "bc"])
    assert windows(ds) == [([98, 99, PAD], [99, X, X])], "only 'bc' has a target"


@pytest.mark.parametrize("texts", [[], [""], ["", ""], ["a"]])
def test_empty_corpus_is_an_error(tok, texts):
    with pytest.raises(ValueError, match="corpus is empty"):
        SlidingWindowDataset(tokenizer=tok, n_context=4, texts=texts)


def test_bad_arguments(tok):
    with pytest.raises(TypeError, match=r"texts=\[text\]"):
        SlidingWindowDataset(tokenizer=tok, n_context=4, texts="abcdef")
    with pytest.raises(ValueError, match="n_context"):
        SlidingWindowDataset(tokenizer=tok, n_context=0, texts=["abc"])
    with pytest.raises(ValueError, match="stride"):
        SlidingWindowDataset(tokenizer=tok, n_context=4, texts=["abc"], stride=0)
    ds = SlidingWindowDataset(tokenizer=tok, n_context=4, texts=["abc"])
    with pytest.raises(IndexError):
        ds[1]


def test_padding_never_counts_in_the_loss(tok):
    ds = SlidingWindowDataset(tokenizer=tok, n_context=6, texts=["abc"])
    x, y = ds[0]
    logits = torch.randn(6, 260, generator=torch.Generator().manual_seed(0))
    loss = F.cross_entropy(logits, y)                       # ignore_index=-100 by default
    real = F.cross_entropy(logits[:2], y[:2])
    torch.testing.assert_close(loss, real)


def test_seed_snippet_with_dataloader():
    """The original design's usage, verbatim, up to the model."""
    text = "".join(builtin_corpus(20_000))                 # enough text for 242 merges
    tokenizer = Tokenizer(vocab_size=500)
    tokenizer.trainTokenizer(text)

    dataset = SlidingWindowDataset(tokenizer=tokenizer, n_context=64, texts=[text])
    loader = DataLoader(dataset, batch_size=32, shuffle=True)

    ids = tokenizer.encode(text)
    assert len(dataset) == -(-(len(ids) - 1) // 64), "ceil((N - 1) / 64) non-overlapping windows"
    seen = []
    for x, y in loader:
        assert x.dtype == y.dtype == torch.int64, "int64 batches"
        assert x.shape[1:] == y.shape[1:] == (64,), f"(B, 64) batches, got {tuple(x.shape)}"
        real = y != IGNORE_INDEX
        assert torch.equal(y[:, :-1][real[:, :-1]], x[:, 1:][real[:, :-1]]), \
            "target = input shifted by one"
        seen += [x[i][0].item() for i in range(len(x))]
    assert len(seen) == len(dataset), "one epoch visits every window once"
    stream = torch.cat([dataset[i][0] for i in range(len(dataset))])
    assert stream[:len(ids)].tolist() == ids, "the windows, in order, are the encoded text"
    assert set(stream[len(ids):].tolist()) <= {tokenizer.pad_id}, "then only padding"
