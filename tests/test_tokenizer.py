"""Encode, decode, special tokens, save and load: known answers and round trips."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from basegpt import Tokenizer
from basegpt.corpus import builtin_corpus
from basegpt.interop.renumbered import RenumberedTokenizer
from basegpt.tokenizer.pretokenize import Splitter
from basegpt.tokenizer.tokenizer import encode_chunk_heap, encode_chunk_simple

VARIED = ("Hello, world! Ça va? Grüße aus Köln. Привет, мир. 你好，世界。こんにちは。"
          "안녕하세요. مرحبا بالعالم. שלום עולם. नमस्ते दुनिया. 😀👍🏽🇺🇳 e\u0301 "
          "tabs\t\tand  spaces   \n\n\r\n  x = 12345678; y = 3.14159 # it's they'll WE'RE\n"
          "\x00\x07\x1b[0m \u2028 \u3000 \ufeff end")


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer(vocab_size=800).train(list(builtin_corpus(200_000)), progress=False)


@pytest.mark.parametrize("text", ["", " ", "a", "\n", "😀", "你好", "e\u0301", "\x00\x01\x7f",
                                  " " * 1000, "\t\n" * 300, VARIED, "<|endoftext|>"])
def test_round_trip_known_cases(tok, text):
    assert tok.decode(tok.encode(text)) == text, f"round trip of {text[:30]!r}"


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_round_trip_any_valid_string(tok, text):
    assert tok.decode(tok.encode(text)) == text, "decode(encode(s)) == s"


@pytest.mark.filterwarnings("ignore:learned only")     # a tiny text: fewer merges than asked
@settings(max_examples=40, deadline=None)
@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60),
       pattern=st.sampled_from(["gpt4", "gpt2", "none"]))
def test_round_trip_every_pattern(text, pattern):
    tokenizer = Tokenizer(vocab_size=300, pattern=pattern).train("abc abc ab " * 5 + text,
                                                                 progress=False)
    assert tokenizer.decode(tokenizer.encode(text)) == text, pattern


def test_byte_ids_for_an_untrained_tokenizer():
    tokenizer = Tokenizer(vocab_size=300)
    assert tokenizer.encode("hé") == [104, 195, 169], "untrained: ids are the UTF-8 bytes"
    assert len(tokenizer) == 258, "256 bytes + 2 specials before training"


def test_known_ids_after_training():
    tokenizer = Tokenizer(vocab_size=260, pattern="none").train("abababab", progress=False)
    # ab=4 -> 256; [256]*4: (256,256)=3 -> 257 -> [257, 257] -> (257, 257) -> 258 (last merge)
    assert tokenizer.merges == [(97, 98), (256, 256)], tokenizer.merges
    assert tokenizer.encode("ababab") == [257, 256], "merges applied in learned order"
    assert tokenizer.encode("ba") == [98, 97], "no merge for (b, a)"


def test_heap_encoder_equals_simple_encoder(tok):
    rng = random.Random(0)
    text = "".join(builtin_corpus(20_000)).encode()
    for _ in range(200):
        start = rng.randrange(len(text))
        data = text[start:start + rng.choice([2, 7, 40, 300])]
        assert encode_chunk_heap(data, tok.ranks) == encode_chunk_simple(data, tok.ranks), data
    assert encode_chunk_heap(b"", tok.ranks) == [], "empty chunk"


def test_long_chunks_without_pre_split():
    text = "".join(builtin_corpus(30_000))
    tokenizer = Tokenizer(vocab_size=400, pattern="none").train(text, progress=False)
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text, "one 30 kB chunk round trips"
    assert len(ids) < len(text.encode()) / 2, "and is compressed"


def test_special_tokens_are_safe_by_default(tok):
    text = "a<|endoftext|>b"
    plain = tok.encode(text)
    assert tok.eot_id not in plain, "special text in user input is ordinary text by default"
    allowed = tok.encode(text, allowed_special="all")
    assert allowed == tok.encode("a") + [tok.eot_id] + tok.encode("b"), allowed
    assert tok.encode(text, allowed_special={"<|endoftext|>"}) == allowed, "explicit set"
    assert tok.decode(allowed) == text, "special ids decode to their text"
    with pytest.raises(ValueError, match="unknown special tokens"):
        tok.encode(text, allowed_special={"<|nope|>"})


def test_register_special_tokens_validates_ids(tok):
    n = 256 + len(tok.merges)
    tokenizer = Tokenizer.from_dict(json.loads(tok.to_json()))
    tokenizer.register_special_tokens({"<|endoftext|>": n + 1, "<|pad|>": n,
                                       "<|sep|>": n + 2})
    assert len(tokenizer) == n + 3 and tokenizer.pad_id == n, "re-registered with explicit ids"
    with pytest.raises(ValueError, match="must be distinct"):
        tokenizer.register_special_tokens({"<|a|>": n, "<|b|>": n})
    with pytest.raises(ValueError, match="collides"):
        tokenizer.register_special_tokens({"<|a|>": n - 1})
    with pytest.raises(ValueError, match="names must be distinct"):
        Tokenizer(vocab_size=300, special_tokens=["<|x|>", "<|x|>"])
    with pytest.raises(ValueError, match="has no <|pad|> token"):
        Tokenizer(vocab_size=300, special_tokens=["<|endoftext|>"]).pad_id


def test_decode_errors(tok):
    with pytest.raises(ValueError, match=r"token id 99999 is out of range.*0\.\.799"):
        tok.decode([1, 99999])
    with pytest.raises(ValueError, match="token id -1 is out of range"):
        tok.decode([-1])
    with pytest.raises(TypeError, match="must be integers"):
        tok.decode([1.5])
    with pytest.raises(TypeError, match=r"must be integers, got True \(bool\)"):
        tok.decode([True, False, 72])              # would otherwise decode as bytes 1, 0, 72
    with pytest.raises(TypeError, match=r"got False \(bool\)"):
        tok.decode([72, False])
    cut = "é".encode()[:1][0]                          # first byte of a 2-byte character
    assert tok.decode([104, cut]) == "h\ufffd", "invalid UTF-8 is replaced by default"
    with pytest.raises(ValueError, match="not decode to valid UTF-8"):
        tok.decode([104, cut], errors="strict")


def test_encode_rejects_lone_surrogates(tok):
    with pytest.raises(ValueError, match="lone surrogate U\\+D800 at index 2"):
        tok.encode("ab\ud800")


def test_decode_accepts_tensors_and_arrays(tok):
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    ids = tok.encode("hello world")
    assert tok.decode(np.array(ids)) == "hello world", "numpy array"
    assert tok.decode(torch.tensor(ids)) == "hello world", "torch tensor"


def test_encode_batch_equals_encode(tok):
    texts = ["one", "two words", "", VARIED]
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts], "batch == one by one"


def test_save_load_round_trip(tok, tmp_path: Path):
    path = tmp_path / "tok.json"
    tok.save(path)
    loaded = Tokenizer.load(path)
    assert loaded.hash == tok.hash, "hash survives save/load"
    assert loaded.merges == tok.merges and loaded.special_tokens == tok.special_tokens
    assert loaded.encode(VARIED) == tok.encode(VARIED), "same ids after load"
    data = json.loads(path.read_text())
    assert data["format"] == "basegpt.tokenizer" and data["version"] == 1, data.keys()
    assert data["vocab_size"] == len(tok), "vocab_size is recorded for people"
    assert list(tmp_path.iterdir()) == [path], "no temp files left behind"


@pytest.mark.parametrize("fail", ["fsync", "replace"])
def test_a_failed_save_keeps_the_old_file(tok, tmp_path: Path, monkeypatch, fail):
    path = tmp_path / "tok.json"
    old = Tokenizer(vocab_size=300)
    old.save(path)
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError(f"{fail} failed: disk full")
    monkeypatch.setattr(os, fail, broken)           # the new text is written, then this fails
    with pytest.raises(OSError, match="disk full"):
        tok.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before, "the old tokenizer.json is untouched"
    assert list(tmp_path.iterdir()) == [path], "and no temp file is left behind"
    assert Tokenizer.load(path).hash == old.hash, "it still loads as the old tokenizer"


def test_save_to_a_folder_is_a_clear_error(tok, tmp_path: Path):
    with pytest.raises(ValueError, match=r"is a folder; .* e\.g\. .*tokenizer\.json"):
        tok.save(tmp_path)
    with pytest.raises(ValueError, match=r"is a folder; .* e\.g\. .*tokenizer\.vocab"):
        tok.save_vocab(tmp_path)
    assert list(tmp_path.iterdir()) == [], "nothing written, no temp file"


def test_custom_pattern_round_trip(tmp_path: Path):
    tokenizer = Tokenizer(vocab_size=260, pattern=r"\w+|\W").train("aa bb aa bb", progress=False)
    tokenizer.save(tmp_path / "t.json")
    loaded = Tokenizer.load(tmp_path / "t.json")
    assert loaded.splitter.pattern == r"\w+|\W", "custom regex stored"
    assert loaded.encode("aa bb") == tokenizer.encode("aa bb"), "same ids"


COVERING = r"\w+|[^\w\s]+|\s+"
"""A custom pattern that matches every character: each one is a word character, a space, or
neither."""


@pytest.fixture(scope="module")
def custom_tok() -> Tokenizer:
    return Tokenizer(vocab_size=400, pattern=COVERING).train(list(builtin_corpus(50_000)),
                                                             progress=False)


@settings(max_examples=100, deadline=None)
@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=120))
def test_custom_covering_pattern_round_trips(custom_tok, text):
    assert "".join(custom_tok.splitter.split(text)) == text, "the chunks cover the text"
    assert custom_tok.decode(custom_tok.encode(text)) == text, "decode(encode(s)) == s"


def test_custom_pattern_that_misses_text_is_an_error():
    with pytest.raises(ValueError) as error:
        Tokenizer(vocab_size=300, pattern=r"\w+")  # would turn "hello, world!" into "helloworld"
    message = str(error.value)
    assert "does not match ',' at index 5" in message, message
    assert "must match every character" in message and r"e.g. '\\w+|\\s+|.'" in message, message
    fixed = Tokenizer(vocab_size=266, pattern=r"\w+|\s+|.").train("hello, world! " * 9,
                                                                  progress=False)
    assert fixed.decode(fixed.encode("hello, world!\n")) == "hello, world!\n", "the fix works"
    # A pattern can pass the check at construction and still miss characters of real text:
    # training and encoding check every text.
    no_hash = Tokenizer(vocab_size=300, pattern=r"[^#]+")
    with pytest.raises(ValueError, match="does not match '#' at index 6"):
        no_hash.train("x = 1 # comment", progress=False)
    with pytest.raises(ValueError, match="does not match '#' at index 0"):
        no_hash.encode("#!")
    with pytest.raises(ValueError, match=r"capturing group.* \(\?:\.\.\.\)"):
        Tokenizer(vocab_size=300, pattern=r"(\w+)|\W")


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(vocab_size=12345), r"vocab_size is 12345 but the file defines 800"),
    (lambda d: d.pop("vocab_size"), "missing fields .'vocab_size'."),
    (lambda d: d.update(version=99), "unknown tokenizer format version 99"),
    (lambda d: d.update(format="other"), "not a basegpt tokenizer"),
    (lambda d: d["merges"].append([5, 100000]), "refers to an id that is not defined"),
    (lambda d: d["merges"].append(d["merges"][0]), "duplicate of an earlier merge"),
    (lambda d: d["merges"].__setitem__(0, [1]), "each merge must be"),
    (lambda d: d.pop("merges"), "missing fields"),
    (lambda d: d["merges"].__setitem__(-1, [0, 1]), "hash mismatch"),  # edited by hand
    (lambda d: d.update(pattern={"name": "nonsense"}), "nonsense"),
])
def test_load_rejects_damaged_files(tok, tmp_path: Path, edit, message):
    data = json.loads(tok.to_json())
    edit(data)
    # keep special ids consistent with the merge count so the intended check is reached
    if isinstance(data.get("merges"), list):
        n = 256 + len(data["merges"])
        data["special_tokens"] = {"<|endoftext|>": n, "<|pad|>": n + 1}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message):
        Tokenizer.load(path)


def test_load_errors_name_the_file(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="nope.json: no such tokenizer file"):
        Tokenizer.load(tmp_path / "nope.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json is not valid JSON"):
        Tokenizer.load(broken)


def test_vocab_dump_is_readable(tok, tmp_path: Path):
    tok.save_vocab(tmp_path / "tok.vocab")
    lines = (tmp_path / "tok.vocab").read_text().splitlines()
    assert len(lines) == len(tok), "one line per token"
    assert lines[104] == "104\t'h'", lines[104]
    a, b = tok.merges[0]
    assert lines[256].startswith("256\t") and f"<- [{a} " in lines[256], lines[256]
    assert lines[tok.eot_id].endswith("(special)"), lines[tok.eot_id]


def test_split_patterns_known_chunks():
    assert Splitter("gpt4").split("x = 12345\n  Hello, world's") == \
        ["x", " =", " ", "123", "45", "\n", " ", " Hello", ",", " world", "'s"]
    assert Splitter("gpt2").split("x = 12345\n  Hello") == \
        ["x", " =", " 12345", "\n ", " Hello"]
    assert Splitter("none").split("a b") == ["a b"] and Splitter("none").split("") == []
    with pytest.raises(ValueError, match="not a valid Python regex"):
        Splitter("(")
    with pytest.raises(ValueError, match="matches the empty string"):
        Splitter("a*")


# -------------------------------------------------------------------- numbering (token_ids)

SMALL_TEXT = "the cat sat on the mat; the cat ate the rat. " * 3
SMALL_HASH = "c3da94b5a97963c98c4b60ebb9917621993a67b97a580958216182dfc1d15725"
"""Hash of Tokenizer(pattern="gpt4") trained on SMALL_TEXT (all its 16 merges), computed on
main before numberings existed: identity-numbered tokenizers must keep their hashes."""


def _small() -> Tokenizer:
    return Tokenizer(vocab_size=274, pattern="gpt4").train(SMALL_TEXT, progress=False)


def _swapped(a: int, b: int) -> Tokenizer:
    """The small tokenizer with public ids a and b exchanged."""
    tokenizer = RenumberedTokenizer.from_tokenizer(_small(), None)
    numbering = list(range(len(tokenizer)))
    numbering[a], numbering[b] = b, a
    tokenizer.token_ids = numbering
    return tokenizer


def test_identity_numbering_keeps_the_hash_and_the_file():
    tokenizer = RenumberedTokenizer.from_tokenizer(_small(), None)
    assert tokenizer.hash == SMALL_HASH, "an untouched tokenizer hashes as before numberings"
    assert tokenizer.token_ids is None and "token_ids" not in tokenizer.to_json(), "no field"
    tokenizer.token_ids = list(range(len(tokenizer)))
    assert tokenizer.token_ids is None and tokenizer.hash == SMALL_HASH, "identity is None"


def test_swapped_ids_known_answers(tmp_path: Path):
    plain = _small()
    assert plain.merges[:3] == [(97, 116), (104, 101), (116, 257)], plain.merges[:3]
    t, eot = ord("t"), plain.eot_id                    # 116 and 272: swap a byte with EOT
    tok = _swapped(t, eot)
    assert tok.encode("t") == [eot] and tok.encode("at") == [256], "byte t is now id 272"
    assert tok.eot_id == t == tok.special_tokens["<|endoftext|>"], "EOT is now id 116"
    assert tok.encode("<|endoftext|>", allowed_special="all") == [t], "special id is public"
    assert tok.vocab[eot] == b"t" and tok.vocab[t] == b"<|endoftext|>", "vocab by public id"
    assert tok.decode([eot, 258]) == "tthe" and tok.token_text(t) == "<|endoftext|>"
    assert tok.merges == plain.merges and len(tok) == len(plain), "merges stay native"
    swap = {t: eot, eot: t}
    for text in (SMALL_TEXT, VARIED, "tt tat"):
        ids = tok.encode(text)
        assert ids == [swap.get(i, i) for i in plain.encode(text)], f"mapped ids of {text!r}"
        assert tok.decode(ids) == text, "round trip"
    assert tok.hash != plain.hash, "the numbering is part of the hash"
    tok.save(tmp_path / "tok.json")
    loaded = Tokenizer.load(tmp_path / "tok.json")
    assert loaded.token_ids == tok.token_ids and loaded.hash == tok.hash, "save/load keeps it"
    assert loaded.encode(VARIED) == tok.encode(VARIED) and loaded.eot_id == t
    tok.save_vocab(tmp_path / "tok.vocab")
    lines = (tmp_path / "tok.vocab").read_text().splitlines()
    assert lines[eot] == "272\t't'", lines[eot]
    assert lines[t] == "116\t'<|endoftext|>'\t(special)", lines[t]
    assert lines[256] == "256\t'at'\t<- [97 'a'] [272 't']", "merge parts in public ids"


def test_c_and_python_encoders_agree_with_a_numbering():
    from basegpt.tokenizer import tokenizer as module
    if module._bpe is None:
        pytest.skip("the C extension is not built")
    tok = _swapped(ord(" "), 257)
    text = VARIED + "".join(builtin_corpus(5_000))
    c_ids = tok.encode(text)
    tok.use_c_encoder = False
    assert tok.encode(text) == c_ids, "C (mapped in Python) == Python path"
    assert tok.encode(" ") == [257], "space is id 257"


@pytest.mark.parametrize("numbering, message", [
    (list(range(10)), "token_ids has 10 ids but the tokenizer has 274 tokens"),
    ([0] + list(range(1, 273)) + [0], "permutation of 0..273 .* id 273 is missing"),
    (list(range(1, 275)), "id 0 is missing"),
    (["a"] * 274, "must be a list of integer ids"),
])
def test_invalid_numberings_are_rejected(numbering, message, tmp_path: Path):
    tokenizer = RenumberedTokenizer.from_tokenizer(_small(), None)
    with pytest.raises(ValueError, match=message):
        tokenizer.token_ids = numbering
    assert tokenizer.token_ids is None and tokenizer.hash == SMALL_HASH, "left unchanged"
    data = json.loads(_swapped(0, 1).to_json())
    data["token_ids"] = numbering
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="bad.json: .*" + message):
        Tokenizer.load(tmp_path / "bad.json")


def test_training_resets_the_numbering_and_register_needs_native_ids():
    tok = _swapped(0, 1)
    with pytest.raises(ValueError, match="register the special tokens first, then set"):
        tok.register_special_tokens({"<|endoftext|>": 272, "<|pad|>": 273})
    assert tok.train(SMALL_TEXT, progress=False).token_ids is None, "trained = native"
    assert tok.hash == SMALL_HASH, "the same tokenizer as a fresh training"
