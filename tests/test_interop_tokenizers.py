"""Exported tokenizers give exactly basegpt's ids in tiktoken and HF tokenizers."""

from __future__ import annotations

import json
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from basegpt import Tokenizer
from basegpt.corpus import builtin_corpus
from basegpt.interop.renumbered import RenumberedTokenizer
from basegpt.interop.tokenizers import (byte_to_unicode, hf_tokenizer_json, load_tiktoken,
                                        save_hf_tokenizer, save_tiktoken, to_hf_tokenizer,
                                        to_tiktoken)

tiktoken = pytest.importorskip("tiktoken", reason="tiktoken is a test extra")
tokenizers = pytest.importorskip("tokenizers", reason="tokenizers is a test extra")

MULTILINGUAL = (
    "Hello, world! Ça va? Grüße aus Köln. Привет, мир. 你好，世界。こんにちは。안녕하세요. "
    "مرحبا بالعالم. שלום עולם. नमस्ते दुनिया. Ελληνικά. 😀👍🏽🇺🇳 e\u0301 ﬁ ½ ² Ⅻ "
    "tabs\t\tand  spaces   \n\n\r\n  x = 12345678; y = 3.14159 # it's they'll WE'RE 'S\n"
    "\x00\x07\x1b[0m \u2028 \u3000 \ufeff \x1c\x1d\x85 end ſ 'ſ K\n")
unicode_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=100)


@pytest.fixture(scope="module", params=["gpt4", "gpt2", "none"])
def trio(request):
    docs = list(builtin_corpus(150_000)) + [MULTILINGUAL * 4]
    tok = Tokenizer(vocab_size=900, pattern=request.param).train(docs, progress=False)
    return tok, to_tiktoken(tok), to_hf_tokenizer(tok)


def _hf_ids(hf, text: str, allow_special: bool = False) -> list[int]:
    # HF matches added tokens in any text unless told otherwise; basegpt's safe default
    # (special-token text is ordinary text) is HF's encode_special_tokens=True.
    hf.encode_special_tokens = not allow_special
    return hf.encode(text, add_special_tokens=False).ids


def test_same_ids_on_multilingual_and_code(trio):
    tok, tt, hf = trio
    text = MULTILINGUAL + "".join(builtin_corpus(30_000, skip_bytes=10_000_000))
    ids = tok.encode(text)
    assert tt.encode_ordinary(text) == ids, "tiktoken ids differ from basegpt's"
    assert _hf_ids(hf, text) == ids, "HF tokenizers ids differ from basegpt's"
    assert hf.decode(ids, skip_special_tokens=False) == text, "HF decodes back to the text"
    assert tt.decode(ids) == text, "tiktoken decodes back to the text"


@settings(max_examples=150, deadline=None)
@given(text=unicode_text)
def test_same_ids_on_random_strings(trio, text):
    tok, tt, hf = trio
    ids = tok.encode(text)
    assert tt.encode_ordinary(text) == ids, f"tiktoken differs on {text!r}"
    assert _hf_ids(hf, text) == ids, f"HF differs on {text!r}"


def test_special_tokens_map_to_the_same_ids(trio):
    tok, tt, hf = trio
    text = "a<|endoftext|>b<|pad|>"
    ids = tok.encode(text, allowed_special="all")
    assert ids[-1] == tok.pad_id and tok.eot_id in ids, ids
    assert tt.encode(text, allowed_special="all") == ids, "tiktoken special ids"
    assert _hf_ids(hf, text, allow_special=True) == ids, "HF special ids"
    assert _hf_ids(hf, text) == tok.encode(text), "and HF's safe mode equals basegpt's default"


def test_rank_file_round_trip(trio, tmp_path):
    tok, _, _ = trio
    rank_path, meta_path = save_tiktoken(tok, tmp_path / "tok.tiktoken")
    assert meta_path.name == "tok.tiktoken.json", meta_path
    first = rank_path.read_text().splitlines()[97]
    assert first == "YQ== 97", f"byte 'a' is base64 YQ== with rank 97, got {first!r}"
    loaded = load_tiktoken(rank_path)
    assert loaded.encode_ordinary(MULTILINGUAL) == tok.encode(MULTILINGUAL), "rank file ids"


def test_hf_file_loads_with_tokenizers(trio, tmp_path):
    tok, _, _ = trio
    save_hf_tokenizer(tok, tmp_path / "tokenizer.json")
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert hf.get_vocab_size() == len(tok), "vocab size includes special tokens"
    assert _hf_ids(hf, MULTILINGUAL) == tok.encode(MULTILINGUAL), "file gives the same ids"


def test_byte_to_unicode_is_gpt2s_mapping():
    mapping = byte_to_unicode()
    assert len(set(mapping.values())) == 256, "a bijection over the 256 bytes"
    assert (mapping[ord("a")], mapping[32], mapping[10], mapping[0]) == ("a", "Ġ", "Ċ", "Ā"), \
        "the characters GPT-2's vocab.json uses"


def test_duplicate_byte_strings_cannot_be_exported():
    tok = Tokenizer(vocab_size=259).train("aaa", progress=False)
    tok._set([(97, 97), (256, 97), (97, 256)], {})       # 'aaa' spelled two ways
    with pytest.raises(ValueError, match="both spell b'aaa'"):
        hf_tokenizer_json(tok)


def _renumbered(tok: Tokenizer, *swaps: tuple[int, int]) -> Tokenizer:
    """A copy of `tok` with each pair of public ids in `swaps` exchanged."""
    copy = RenumberedTokenizer.from_dict(json.loads(tok.to_json()))
    numbering = list(range(len(copy)))
    for a, b in swaps:
        numbering[a], numbering[b] = numbering[b], numbering[a]
    copy.token_ids = numbering
    return copy


def test_numbered_tokenizer_exports_its_public_ids(trio):
    tok, _, _ = trio
    eot = tok.eot_id
    # GPT-2-like: bytes reordered (and a special token among them), merges still in order
    numbered = _renumbered(tok, (0, 1), (ord(" "), eot))
    ids = numbered.encode(MULTILINGUAL)
    assert ids != tok.encode(MULTILINGUAL), "the numbering changes the ids"
    assert to_tiktoken(numbered).encode_ordinary(MULTILINGUAL) == ids, "tiktoken: public ids"
    assert _hf_ids(to_hf_tokenizer(numbered), MULTILINGUAL) == ids, "HF: public ids"
    text = "a<|endoftext|>b"
    assert _hf_ids(to_hf_tokenizer(numbered), text, allow_special=True) == \
        numbered.encode(text, allowed_special="all"), "special tokens keep their public ids"


def test_tiktoken_refuses_merges_numbered_out_of_order(trio):
    tok, _, _ = trio
    numbered = _renumbered(tok, (256, 300))                  # merge 44 now comes "before" merge 0
    with pytest.raises(ValueError, match="cannot export to tiktoken: merge 0 has id 300 but "
                                         "the later merge 1 has the smaller id 257"):
        to_tiktoken(numbered)
    ids = numbered.encode(MULTILINGUAL)
    assert _hf_ids(to_hf_tokenizer(numbered), MULTILINGUAL) == ids, \
        "HF orders merges by list, not id: it still exports"


def test_a_missing_peer_library_names_the_fix(monkeypatch, tmp_path):
    tok = Tokenizer(vocab_size=258)
    save_tiktoken(tok, tmp_path / "tok.tiktoken")          # writing needs no library
    monkeypatch.setitem(sys.modules, "tiktoken", None)     # import tiktoken now fails
    with pytest.raises(ImportError, match="exporting to tiktoken needs tiktoken: pip install "
                                          "tiktoken"):
        to_tiktoken(tok)
    with pytest.raises(ImportError, match="pip install tiktoken"):
        load_tiktoken(tmp_path / "tok.tiktoken")
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(ImportError, match="tokenizers needs tokenizers: pip install tokenizers"):
        to_hf_tokenizer(tok)


def test_return_types_name_the_peer_classes():
    tok = Tokenizer(vocab_size=258)
    peers = {"tiktoken": tiktoken, "tokenizers": tokenizers}
    for function, value in ((to_tiktoken, to_tiktoken(tok)),
                            (to_hf_tokenizer, to_hf_tokenizer(tok))):
        annotation = eval(function.__annotations__["return"], peers)  # a string: no import
        assert type(value) is annotation, f"{function.__name__} returns {type(value)}"
    assert eval(load_tiktoken.__annotations__["return"], peers) is tiktoken.Encoding
