"""The C extension (_bpe.c) gives exactly the Python results: splits, counts, merges, ids.

The Python modules are the specification: pretokenize.Splitter (re.findall), trainer.count_chunks,
bpe_fast.train_fast / bpe_reference.train_reference, and bpe_reference.merge applied in merge
order. Skipped as a whole where the extension was not built (no compiler, BASEGPT_NO_EXT=1).
"""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

_bpe = pytest.importorskip(
    "basegpt.tokenizer._bpe",
    reason="C extension not built; build it with `python setup.py build_ext --inplace`")

from basegpt.corpus import builtin_corpus  # noqa: E402
from basegpt.tokenizer import trainer  # noqa: E402
from basegpt.tokenizer._unicode import LETTER, NUMBER, WHITE_SPACE  # noqa: E402
from basegpt.tokenizer.bpe_fast import train_fast  # noqa: E402
from basegpt.tokenizer.bpe_reference import merge, train_reference  # noqa: E402
from basegpt.tokenizer.pretokenize import Splitter  # noqa: E402

PATTERNS = ("gpt4", "gpt2")


def _sample(ranges: tuple[tuple[int, int], ...], k: int, seed: int) -> list[str]:
    """k code points of a class, spread over all its ranges (many scripts, not just ASCII)."""
    rng = random.Random(seed)
    return [chr(rng.randint(*rng.choice(ranges))) for _ in range(k)]


# Characters where the two patterns' alternatives meet: every kind of white space (the
# lookahead and line-break rules), apostrophes and contraction letters in both cases, digits of
# several scripts, letters of many scripts, punctuation, marks, emoji, control characters.
BOUNDARY = (list(" \t\n\r\x0b\x0c\x85\xa0\u1680\u2000\u2028\u2029\u202f\u3000")
            + list("'''sStTdDmMlLvVeErR") + list("0123456789٣४") + list("ab日本éЖ")
            + list(".,;:!?()[]{}-_=+*/\\\"`~@#$%^&|<>") + ["\u0301", "\U0001f600", "\x00", "\x1c"]
            + [chr(cp) for cp, _ in WHITE_SPACE]
            + _sample(LETTER, 30, 1) + _sample(NUMBER, 15, 2))
boundary_text = st.text(alphabet=st.sampled_from(BOUNDARY), max_size=60)
spacey_text = st.text(alphabet=st.sampled_from(list("  \t\n\r\u3000\xa0a1'.")), max_size=40)
any_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)
texty = st.text(alphabet=st.sampled_from(list("aab  \n\t'sS0123é日本😀.,")), max_size=120)
# Few letters, long words: adjacent and overlapping occurrences of a pair ("abab", "aaa"),
# where a merge's count updates are easiest to get wrong.
runs = st.text(alphabet="abc", min_size=1, max_size=40)

EDGE_CASES = ["", " ", "   ", " \n\n  x", "'S'll", "'s'T'Re'vE'LL'd'm", "'", "''", "x'", " 's",
              "12345", "1234567 89", "\u3000\u00a0x", "\x1c", "\t\tfoo", "\tfoo", "  \tx",
              "a\r\n\r\n  b", "a \n \n b", "x = 12345\n", "Hello, world!\n", "  ", "\n", "\r\n",
              " \r", "?!\n\n", " ?!\r\n x", "..\n\nfoo", "٣٤٥٦", "日本語のテキスト", "😀😀 😀",
              "e\u0301te\u0301", "a\u00a0\u00a0b", "\u2028x", " 1", "  1", "\n1", "\x85a",
              "don't DON'T we're WE'RE", "tab\t\t\n\tend ", "end with space "]


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("text", EDGE_CASES)
def test_split_edge_cases(text, pattern):
    assert _bpe.split(text, pattern) == Splitter(pattern).split(text), \
        f"C and re.findall split {text!r} differently under {pattern}"


@pytest.mark.parametrize("pattern", PATTERNS)
@settings(max_examples=1000, deadline=None)
@given(text=st.one_of(boundary_text, spacey_text, any_text))
@example(text="")
def test_split_equals_python_regex(text, pattern):
    assert _bpe.split(text, pattern) == Splitter(pattern).split(text), \
        f"C and re.findall split {text!r} differently under {pattern}"


def test_split_none_and_bad_input():
    assert _bpe.split("a b\nc", "none") == ["a b\nc"], "pattern none: one chunk per document"
    assert _bpe.split("", "none") == [], "no chunk for an empty document"
    with pytest.raises(ValueError, match="built-in patterns"):
        _bpe.split("abc", r"\w+")
    with pytest.raises(TypeError, match="str"):
        _bpe.split(b"abc", "gpt4")
    with pytest.raises(UnicodeEncodeError):
        _bpe.split("a\ud800b", "gpt4")


def test_split_real_text():
    text = "".join(builtin_corpus(200_000)) + "".join(EDGE_CASES)
    for pattern in PATTERNS:
        assert _bpe.split(text, pattern) == Splitter(pattern).split(text), \
            f"C and re.findall disagree on the built-in corpus under {pattern}"


# ------------------------------------------------------------------------------- counting

@pytest.mark.parametrize("pattern", ("gpt4", "gpt2", "none"))
@settings(max_examples=50, deadline=None)
@given(docs=st.lists(st.one_of(texty, boundary_text), max_size=5))
def test_chunk_counter_equals_count_chunks(docs, pattern):
    counter = _bpe.ChunkCounter(pattern)
    for doc in docs:
        counter.add(doc)
    expected = trainer.count_chunks(docs, Splitter(pattern))
    assert counter.items() == list(expected.items()), "same chunks, counts and first-seen order"
    assert len(counter) == len(expected), "len() is the number of unique chunks"
    words, counts = counter.words_counts()
    assert words == [chunk.encode("utf-8") for chunk in expected], "words are UTF-8 chunks"
    assert counts == list(expected.values()), "counts line up with words"


def test_chunk_counter_on_real_text():
    docs = list(builtin_corpus(300_000))
    counter = _bpe.ChunkCounter("gpt4")
    for doc in docs:
        counter.add(doc)
    assert dict(counter.items()) == trainer.count_chunks(docs, Splitter("gpt4")), \
        "C counts equal Counter on the built-in corpus"


# ------------------------------------------------------------------------------- training

def _train_all(docs: list[str], pattern: str, n_merges: int):
    splitter = Splitter(pattern)
    counts = trainer.count_chunks(docs, splitter)
    words = [chunk.encode("utf-8") for chunk in counts]
    chunks = [chunk for doc in docs for chunk in splitter.split(doc)]
    return (_bpe.train(words, list(counts.values()), n_merges),
            train_fast(words, counts.values(), n_merges),
            train_reference(chunks, n_merges))


@pytest.mark.parametrize("pattern", ("gpt4", "gpt2", "none"))
@settings(max_examples=40, deadline=None)
@given(docs=st.lists(st.one_of(texty, any_text, runs), max_size=5),
       n_merges=st.integers(min_value=0, max_value=40))
def test_c_trainer_equals_python_trainers(docs, pattern, n_merges):
    c, fast, reference = _train_all(docs, pattern, n_merges)
    assert c == fast == reference, f"C {c} / fast {fast} / reference {reference} differ"


def test_c_trainer_by_hand_and_progress():
    # "abab" + "ab": (97, 98) x3 -> 256; then (256, 256) x1 -> 257; then nothing is left.
    calls = []
    merges = _bpe.train([b"abab", b"ab"], [1, 1], 5, calls.append)
    assert merges == [(97, 98), (256, 256)], f"hand-computed merges, got {merges}"
    assert calls and calls[-1] == 2, f"on_merge ends with the number of merges, got {calls}"
    assert _bpe.train([b"aaaa"], [3], 2) == [(97, 97), (256, 256)], "overlapping runs"
    # (a, b) x5 first; then "abab" has no (b, a) left, so (b, a) = 2 ties (c, d) = 2 and wins as
    # the smaller pair. Counting abab's middle (b, a) twice would leave 1 and pick (c, d).
    merges = _bpe.train([b"abab", b"ab", b"ba", b"cd"], [1, 3, 2, 2], 2)
    assert merges == [(97, 98), (98, 97)], f"adjacent occurrences counted once, got {merges}"
    assert _bpe.train([], [], 10) == [], "no words, no merges"
    with pytest.raises(TypeError, match="bytes"):
        _bpe.train(["ab"], [1], 1)
    with pytest.raises(ValueError, match="positive"):
        _bpe.train([b"ab"], [0], 1)
    with pytest.raises(ValueError, match="length"):
        _bpe.train([b"ab"], [1, 2], 1)


def test_c_trainer_passes_exceptions_from_on_merge():
    def stop(done: int) -> None:
        raise KeyboardInterrupt
    words = [bytes([i % 7, (i * 3) % 11, i % 5]) * 10 for i in range(300)]
    with pytest.raises(KeyboardInterrupt):
        _bpe.train(words, [1] * len(words), 200, stop)


def test_c_trainer_equals_python_on_real_text():
    docs = list(builtin_corpus(300_000))
    counts = trainer.count_chunks(docs, Splitter("gpt4"))
    words = [chunk.encode("utf-8") for chunk in counts]
    c = _bpe.train(words, list(counts.values()), 300)
    assert len(c) == 300, "the corpus has enough pairs for 300 merges"
    assert c == train_fast(words, counts.values(), 300), "C and Python merges differ"


def test_learn_merges_backends_agree():
    docs = list(builtin_corpus(60_000)) + ["日本語 😀 'S'll \r\n\r\n  x"]
    for pattern in ("gpt4", "gpt2", "none", r"\S+|\s+"):
        splitter = Splitter(pattern)
        merges = {backend: trainer.learn_merges(docs, splitter, 120, backend, progress=False)
                  for backend in ("c", "python")}
        assert merges["c"] == merges["python"], f"backends differ for pattern {pattern!r}"


# ------------------------------------------------------------------------------- encoding

def encode_python(text: str, merges, pattern: str) -> list[int]:
    """The specification: split, then bpe_reference.merge for each merge in order."""
    cache: dict[str, list[int]] = {}
    ids: list[int] = []
    for chunk in Splitter(pattern).split(text):
        if chunk not in cache:
            chunk_ids = list(chunk.encode("utf-8"))
            for i, pair in enumerate(merges):
                chunk_ids = merge(chunk_ids, pair, 256 + i)
            cache[chunk] = chunk_ids
        ids += cache[chunk]
    return ids


def encode_by_replace(data: bytes, merges) -> list[int]:
    """bpe_reference.merge in order, with each token as one character of a str: str.replace is
    the same left-to-right, non-overlapping replacement, but fast enough for 100 kB."""
    s = "".join(map(chr, data))
    for i, (a, b) in enumerate(merges):
        s = s.replace(chr(a) + chr(b), chr(256 + i))
    return [ord(c) for c in s]


@pytest.fixture(scope="module")
def trained():
    """Merges learned on real text (with punctuation, numbers and long runs), per pattern."""
    docs = list(builtin_corpus(150_000))
    return docs, {pattern: trainer.learn_merges(docs, Splitter(pattern), 250, "c", False)
                  for pattern in ("gpt4", "gpt2", "none")}


@pytest.mark.parametrize("pattern", ("gpt4", "gpt2", "none"))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_encoder_equals_python_on_random_text(trained, data, pattern):
    text = data.draw(st.one_of(texty, boundary_text, any_text), label="text")
    merges = trained[1][pattern]
    encoder = _bpe.Encoder(merges, pattern)
    expected = encode_python(text, merges, pattern)
    assert encoder.encode(text) == expected, f"ids of {text!r} differ"
    assert encoder.encode(text) == expected, "a second (cached) encode gives the same ids"


@settings(max_examples=40, deadline=None)
@given(docs=st.lists(texty, min_size=1, max_size=4), n_merges=st.integers(0, 30),
       text=texty)
def test_encoder_with_merges_from_random_text(docs, n_merges, text):
    merges = trainer.learn_merges(docs, Splitter("gpt4"), n_merges, "c", False)
    for pattern in ("gpt4", "none"):
        assert _bpe.Encoder(merges, pattern).encode(text) == encode_python(text, merges, pattern)
        assert encode_by_replace(text.encode(), merges) == encode_python(text, merges, "none"), \
            "the str.replace helper is the reference merge"


def test_encoder_equals_python_on_real_text(trained):
    docs, merges = trained
    text = "".join(builtin_corpus(400_000))[300_000:]  # partly text the merges never saw
    for pattern in ("gpt4", "gpt2"):
        encoder = _bpe.Encoder(merges[pattern], pattern, cache_size=1000)  # clears often
        assert encoder.encode(text) == encode_python(text, merges[pattern], pattern), \
            f"ids differ under {pattern}"
        assert encoder.cache_info()["entries"] <= 1000, "the cache stays bounded"


def test_encoder_long_chunk_without_split(trained):
    docs, merges = trained
    text = "".join(docs)[:100_000]
    ids = _bpe.Encoder(merges["none"], "none").encode(text)
    assert ids == encode_by_replace(text.encode("utf-8"), merges["none"]), \
        "heap encoding of one 100 kB chunk differs from merging in order"
    assert len(ids) < len(text.encode()) // 2, "the merges compress the text"


def test_encoder_rejects_bad_merges():
    with pytest.raises(ValueError, match="does not exist yet"):
        _bpe.Encoder([(97, 98), (300, 97)])
    with pytest.raises(ValueError, match="pair"):
        _bpe.Encoder([(1, 2, 3)])
    with pytest.raises(ValueError, match="built-in patterns"):
        _bpe.Encoder([], r"\w+")
    assert _bpe.Encoder([]).encode("hé") == list("hé".encode()), "no merges: the bytes"


# ------------------------------------------------------------------------------- Tokenizer hook

@pytest.mark.parametrize("pattern", ("gpt4", "gpt2", "none"))
def test_tokenizer_uses_c_encoder_with_python_ids(trained, pattern):
    from basegpt import Tokenizer
    docs, _ = trained
    tok = Tokenizer(vocab_size=600, pattern=pattern).train(docs, progress=False)
    python_tok = Tokenizer.from_dict(json.loads(tok.to_json()))
    python_tok.use_c_encoder = False
    text = "".join(builtin_corpus(350_000))[250_000:] + "".join(EDGE_CASES) + "<|endoftext|>x"
    for allowed in ((), "all"):
        c_ids = tok.encode(text, allowed_special=allowed)
        assert c_ids == python_tok.encode(text, allowed_special=allowed), \
            f"C and Python encode differ under {pattern} (allowed_special={allowed!r})"
    assert tok._c_encoder is not None, "the C Encoder did the work"
    assert python_tok._c_encoder is None, "use_c_encoder=False keeps the Python path"
    assert tok.decode(c_ids) == text, "round trip through the C path"
