"""Training: hand-checkable merges, determinism, and the fast trainers agreeing with the reference."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from basegpt import Tokenizer
from basegpt.corpus import builtin_corpus
from basegpt.tokenizer.bpe_fast import train_fast
from basegpt.tokenizer.bpe_reference import merge, most_frequent_pair, train_reference
from basegpt.tokenizer.pretokenize import Splitter
from basegpt.tokenizer.trainer import count_chunks, iter_documents, learn_merges

# Text that stresses the trainer: repeated pairs, overlapping runs, multi-byte characters.
texty = st.text(alphabet=st.sampled_from(list("aab  \n\t'sS0123é日本😀.,")), max_size=120)
any_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80)


def test_merge_replaces_left_to_right_without_overlap():
    assert merge([1, 2, 3, 1, 2], (1, 2), 256) == [256, 3, 256], "both occurrences replaced"
    assert merge([7, 7, 7], (7, 7), 256) == [256, 7], "overlapping run merges leftmost first"
    assert merge([7, 7, 7, 7], (7, 7), 256) == [256, 256], "even run merges fully"
    assert merge([], (1, 2), 256) == [], "empty stays empty"


def test_tie_break_prefers_smallest_pair():
    counts = Counter({(5, 9): 3, (4, 200): 3, (4, 100): 3, (1, 1): 2})
    assert most_frequent_pair(counts) == (4, 100), "equal counts: smallest (left, right) wins"


def test_reference_merges_by_hand():
    # "abab" + "ab": pairs ab=3, ba=1 -> (97, 98) -> 256; then "256 256 | 256": (256, 256)=1 -> 257.
    merges = train_reference(["abab", "ab"], n_merges=5)
    assert merges == [(97, 98), (256, 256)], f"hand-computed merges, got {merges}"


def test_hihi_example_from_the_docs():
    assert train_reference(["hihi!"], 1) == [(104, 105)], "most frequent pair h,i"


def test_seed_api_trains_to_requested_vocab_size():
    text = "".join(builtin_corpus(20_000))
    tokenizer = Tokenizer(vocab_size=500)
    assert tokenizer.trainTokenizer(text) is tokenizer, "seed call returns the tokenizer"
    assert len(tokenizer) == 500, f"len counts bytes+merges+specials, got {len(tokenizer)}"
    assert len(tokenizer.merges) == 500 - 256 - 2, "specials take two ids of vocab_size"
    assert tokenizer.special_tokens == {"<|endoftext|>": 498, "<|pad|>": 499}, \
        "special ids come right after the merges"
    assert tokenizer.decode(tokenizer.encode(text)) == text, "round trip"
    assert len(tokenizer.encode(text)) < 0.5 * len(text.encode()), "merges compress the text"


def test_training_stops_when_no_pairs_are_left():
    with pytest.warns(UserWarning, match="learned only 1 of the 742 merges that "
                                         "vocab_size=1000 asks for.* has 259 tokens"):
        tokenizer = Tokenizer(vocab_size=1000).train("ab", progress=False)
    assert tokenizer.merges == [(97, 98)], "only one pair exists"
    assert len(tokenizer) == 256 + 1 + 2, "vocab is smaller than asked, specials still follow"
    assert tokenizer.eot_id == 257, "eot right after the single merge"


@pytest.mark.filterwarnings("ignore:learned only")     # tiny texts: fewer merges than asked
def test_merges_never_cross_chunks_or_documents():
    tokenizer = Tokenizer(vocab_size=400, pattern="gpt4").train(["ab cd", "ef"])
    pieces = {tokenizer.vocab[256 + i] for i in range(len(tokenizer.merges))}
    assert all(b"b c" not in p and b"bc" not in p for p in pieces), pieces
    pure = Tokenizer(vocab_size=400, pattern="none").train(["xy", "xy"])
    assert pure.merges == [(120, 121)], "no pair spans the two documents"


@pytest.mark.parametrize("pattern", ["gpt4", "gpt2", "none"])
def test_fast_equals_reference_on_real_text(pattern):
    docs = list(builtin_corpus(40_000))
    splitter = Splitter(pattern)
    reference = learn_merges(docs, splitter, 150, backend="reference", progress=False)
    fast = learn_merges(docs, splitter, 150, backend="python", progress=False)
    assert fast == reference, "python fast trainer must give the reference merges"
    assert len(reference) == 150, "enough pairs in 40 kB of code for 150 merges"


@settings(max_examples=120, deadline=None)
@given(docs=st.lists(st.one_of(texty, any_text), min_size=1, max_size=4),
       pattern=st.sampled_from(["gpt4", "gpt2", "none"]), n_merges=st.integers(0, 40))
def test_fast_trainer_matches_reference(docs, pattern, n_merges):
    splitter = Splitter(pattern)
    chunks = [c for d in docs for c in splitter.split(d)]
    counts = Counter(chunks)
    expected = train_reference(chunks, n_merges)
    got = train_fast([c.encode() for c in counts], counts.values(), n_merges)
    assert got == expected, "fast and reference trainers disagree"


def test_training_is_deterministic_and_backend_independent():
    docs = list(builtin_corpus(60_000))
    runs = {backend: Tokenizer(vocab_size=500).train(docs, backend=backend, progress=False)
            for backend in ("auto", "python")}
    again = Tokenizer(vocab_size=500).train(docs, progress=False)
    assert runs["auto"].merges == runs["python"].merges, "auto (C if built) == python"
    assert again.hash == runs["auto"].hash, "same input, same tokenizer, same hash"


def test_streaming_files_gives_the_same_counts_as_whole_text(tmp_path: Path):
    text = "".join(builtin_corpus(50_000))
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    for pattern in ("gpt4", "gpt2"):
        splitter = Splitter(pattern)
        blocks = list(iter_documents([path], splitter, block_chars=997))
        assert len(blocks) > 10, "the file was really read in many blocks"
        assert "".join(blocks) == text, "blocks cover the file exactly"
        assert count_chunks(blocks, splitter) == count_chunks([text], splitter), pattern


def test_train_from_files_equals_train_from_text(tmp_path: Path):
    text = "".join(builtin_corpus(30_000))
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    from_file = Tokenizer(vocab_size=400).train([tmp_path / "a.txt"], progress=False)
    from_text = Tokenizer(vocab_size=400).train(text, progress=False)
    assert from_file.merges == from_text.merges, "a file is one document, same as its text"


def test_bad_training_input_is_a_clear_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        Tokenizer(vocab_size=300).train([tmp_path / "missing.txt"])
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.txt is not valid UTF-8"):
        Tokenizer(vocab_size=300).train([bad])
    with pytest.raises(ValueError, match="lone surrogate"):
        Tokenizer(vocab_size=300).train("ok \udc80 bad")
    with pytest.raises(TypeError, match="str .text. or a path"):
        Tokenizer(vocab_size=300).train([b"bytes"])
    with pytest.raises(ValueError, match="too small"):
        Tokenizer(vocab_size=100)
    with pytest.raises(ValueError, match="unknown training backend"):
        Tokenizer(vocab_size=300).train("abc", backend="rust")


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("ab \n\t\r.'5é日")), max_size=60),
       pattern=st.sampled_from(["gpt4", "gpt2"]))
def test_safe_cut_never_changes_chunks(text, pattern):
    splitter = Splitter(pattern)
    cut = splitter.safe_cut(text)
    if cut:
        assert splitter.split(text[:cut]) + splitter.split(text[cut:]) == splitter.split(text), \
            f"cutting {text!r} at {cut} changed the chunks"


# Every kind of character the two patterns tell apart: letters (ASCII, accented, CJK),
# numbers (digits, ½, Arabic-Indic), whitespace (space, tab, \r, \n, no-break and ideographic
# spaces), punctuation (ASCII, CJK, `_`), a combining accent (category M: none of L, N, WS),
# and fragments that start contractions, \r\n pairs, space runs and long numbers.
cut_text = st.lists(st.sampled_from(
    list("abZé日本語05½٣ \t\r\n\u00a0\u3000.,_'\"{}:-。、\u0301")
    + ["'s", "'ll", "'RE", "\r\n", "   ", "1234567", "foo_bar", '{"k":[1,2]}']),
    max_size=40).map("".join)


def all_safe_cuts(splitter: Splitter, text: str) -> list[int]:
    """Every safe cut of `text`, last first: a cut of a prefix is one of the text (the rule
    looks at two characters only)."""
    cuts = []
    while cut := splitter.safe_cut(text[:cuts[-1]] if cuts else text):
        cuts.append(cut)
    return cuts


@settings(max_examples=400, deadline=None)
@given(text=cut_text | any_text, pattern=st.sampled_from(["gpt4", "gpt2"]))
def test_every_safe_cut_keeps_the_chunks(text, pattern):
    splitter = Splitter(pattern)
    whole = splitter.split(text)
    cuts = all_safe_cuts(splitter, text)
    for cut in cuts:
        assert splitter.split(text[:cut]) + splitter.split(text[cut:]) == whole, \
            f"cutting {text!r} at {cut} changed the chunks"
    bounds = [0, *sorted(cuts), len(text)]
    blocks = [text[a:b] for a, b in zip(bounds, bounds[1:])]
    assert [c for block in blocks for c in splitter.split(block)] == whole, \
        f"cutting {text!r} at all of {sorted(cuts)} at once changed the chunks"
    for start in range(len(text)):
        assert splitter.safe_cut(text, start) == max([c for c in cuts if c > start], default=0), \
            f"safe_cut({text!r}, {start}) is not the last cut after {start}"


def test_safe_cuts_without_spaces():
    gpt4 = Splitter("gpt4")
    assert all_safe_cuts(gpt4, "日本語。中文") == [3], "CJK letters, then punctuation"
    assert all_safe_cuts(gpt4, '{"a":12}') == [7, 3], 'minified JSON: after a, after 12'
    assert all_safe_cuts(gpt4, "foo_bar1") == [7, 3], "identifiers: before _ and the digit"
    assert all_safe_cuts(gpt4, "x  \n\n  ,.;") == [1], "never after whitespace or punctuation"
    assert all_safe_cuts(gpt4, "abcdef") == [], "one word: no cut"
    assert Splitter("none").safe_cut("a b. c") == 0, "pattern none: never"
    assert Splitter(r"\S+|\s+").safe_cut("a b. c") == 0, "a custom pattern: never"


def test_all_merges_learned_means_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tokenizer = Tokenizer(vocab_size=260).train("abababab", progress=False)
    assert len(tokenizer.merges) == 2, tokenizer.merges


@pytest.mark.parametrize("backend", ["auto", "python", "reference"])
@pytest.mark.parametrize("texts", [[], "", ["", ""], "empty file", "folder of empty files"])
def test_no_text_at_all_is_an_error(texts, backend, tmp_path: Path):
    if texts == "empty file":
        texts = [tmp_path / "empty.txt"]
        texts[0].write_text("")
    elif texts == "folder of empty files":
        (tmp_path / "docs").mkdir()
        (tmp_path / "docs" / "a.txt").write_text("")
        texts = tmp_path / "docs"
    tokenizer = Tokenizer(vocab_size=300)
    with pytest.raises(ValueError, match="no text to train on"):
        tokenizer.train(texts, backend=backend, progress=False)
    assert len(tokenizer) == 258, "the tokenizer is left as it was"


def test_train_on_a_folder_reads_its_files_as_the_cli_does(tmp_path: Path):
    docs = list(builtin_corpus(30_000))
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.py").write_text(docs[0], encoding="utf-8")
    (folder / "sub" / "a.py").write_text(docs[1], encoding="utf-8")
    (folder / ".hidden").write_text("zz" * 5000)         # skipped, as `expand_paths` skips it
    from_folder = Tokenizer(vocab_size=400).train(folder, progress=False)
    from_files = Tokenizer(vocab_size=400).train([folder / "b.py", folder / "sub" / "a.py"],
                                                 progress=False)
    assert from_folder.merges == from_files.merges, "a folder is its (visible) files"
    assert Tokenizer(vocab_size=259).train([folder / ".hidden"], progress=False).merges == \
        [(122, 122)], "the hidden file alone learns 'zz', which the folder never did"
    assert (122, 122) not in from_folder.merges, "so the folder skipped it"
    assert Tokenizer(vocab_size=400).train([folder], progress=False).hash == from_folder.hash


def test_custom_pattern_missing_characters_fails_training():
    with pytest.raises(ValueError, match="does not match '#' at index 6"):
        Tokenizer(vocab_size=300, pattern=r"[^#]+").train(["ok", "x = 1 # comment"],
                                                          progress=False)


@pytest.mark.parametrize("backend", ["reference", "python", "auto"])
def test_progress_bar_goes_to_stderr_and_can_be_silenced(backend, capfd):
    text = "".join(builtin_corpus(5_000))
    Tokenizer(vocab_size=300).train(text, backend=backend, progress=True)
    out, err = capfd.readouterr()
    assert "BPE merges" in err and "42/42" in err, f"a bar counting all 42 merges: {err!r}"
    assert out == "", "nothing on stdout"
    Tokenizer(vocab_size=300).train(text, backend=backend, progress=False)
    assert capfd.readouterr() == ("", ""), "progress=False writes nothing"


NO_EXTENSION = r"""
import json, sys
sys.modules["basegpt.tokenizer._bpe"] = None     # as if no compiler had built it
from basegpt import Tokenizer
from basegpt.corpus import builtin_corpus
from basegpt.tokenizer import tokenizer, trainer
assert trainer._bpe is None and tokenizer._bpe is None, "the extension is blocked"
docs = list(builtin_corpus(30_000))
tok = Tokenizer(vocab_size=400).train(docs, progress=False)      # backend "auto"
try:
    Tokenizer(vocab_size=400).train(docs, backend="c", progress=False)
    c_error = None
except ValueError as error:
    c_error = str(error)
json.dump({"merges": tok.merges, "hash": tok.hash, "ids": tok.encode(docs[0][:5000]),
           "round_trip": tok.decode(tok.encode(docs[1])) == docs[1], "c_error": c_error},
          open(sys.argv[1], "w"))
"""


def test_the_package_works_without_the_c_extension(tmp_path: Path):
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, "-c", NO_EXTENSION, str(out)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, f"the pure-Python path failed:\n{proc.stderr[-3000:]}"
    got = json.loads(out.read_text())
    docs = list(builtin_corpus(30_000))
    here = Tokenizer(vocab_size=400).train(docs, progress=False)   # C, where it was built
    assert [tuple(pair) for pair in got["merges"]] == here.merges, "the same merges"
    assert got["hash"] == here.hash, "the same tokenizer"
    assert got["ids"] == here.encode(docs[0][:5000]), "the same ids from the Python encoder"
    assert got["round_trip"], "decode(encode(s)) == s without the extension"
    assert "needs the compiled extension" in got["c_error"], got["c_error"]
