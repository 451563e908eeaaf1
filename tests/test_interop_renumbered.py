"""RenumberedTokenizer: the worked examples of its docstring, tokenizer.json files of both
kinds as earlier versions wrote them, and the plain Tokenizer knowing only its own ids.

tests/fixtures/tokenizer_plain.json and tokenizer_renumbered.json were written by basegpt
before the numbering moved out of the core Tokenizer: a plain trained tokenizer, and an
import of a `tokenizers`-trained byte-level BPE (special tokens first, its own byte order,
two unused ids). The ids below were computed then, and the renumbered ones equal HF's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from basegpt import Tokenizer
from basegpt.interop.renumbered import RenumberedTokenizer
from basegpt.interop.tokenizers import byte_to_unicode, from_hf_tokenizer_json, hf_tokenizer_json

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLE = "the rat sat; Köln's cat ate 12345 <|endoftext|> at the mat\n"

PLAIN_IDS = [258, 268, 271, 59, 277, 195, 182, 108, 110, 39, 115, 261, 272, 276, 50, 51, 52,
             53, 32, 60, 124, 101, 110, 100, 111, 102, 116, 101, 120, 116, 124, 62, 267, 259,
             269, 10]
PLAIN_IDS_SPECIAL = PLAIN_IDS[:19] + [278] + PLAIN_IDS[32:]
RENUMBERED_IDS = [260, 273, 272, 28, 222, 44, 129, 116, 77, 79, 8, 84, 263, 274, 222, 18, 19,
                  20, 21, 22, 222, 29, 93, 70, 79, 69, 80, 71, 85, 70, 89, 85, 93, 31, 269,
                  261, 270, 200]
RENUMBERED_IDS_SPECIAL = RENUMBERED_IDS[:21] + [0] + RENUMBERED_IDS[34:]


@pytest.mark.parametrize("name, kind, ids, ids_special, eot", [
    ("tokenizer_plain.json", Tokenizer, PLAIN_IDS, PLAIN_IDS_SPECIAL, 278),
    ("tokenizer_renumbered.json", RenumberedTokenizer, RENUMBERED_IDS, RENUMBERED_IDS_SPECIAL, 0),
])
def test_files_written_before_the_move_load_with_the_same_ids(name, kind, ids, ids_special, eot,
                                                              tmp_path):
    path = FIXTURES / name
    tok = Tokenizer.load(path)
    assert type(tok) is kind, f"{name} loads as {type(tok).__name__}"
    assert tok.encode(SAMPLE) == ids, "ordinary encoding gives the ids of the old code"
    assert tok.encode(SAMPLE, allowed_special="all") == ids_special, "special ids too"
    assert tok.eot_id == eot and tok.decode(ids) == SAMPLE, "public ids round trip"
    assert tok.hash == json.loads(path.read_text())["hash"], "same hash as the file"
    assert tok.to_json() == path.read_text(), "saving writes the file back byte for byte"
    tok.use_c_encoder = False
    assert tok.encode(SAMPLE) == ids, "the Python path gives the same ids"
    assert type(Tokenizer.from_dict(json.loads(path.read_text()))) is kind, \
        "from_dict (the data workers' path) builds the same class"


def test_a_fresh_interpreter_loads_a_renumbered_file_without_importing_interop():
    # Tokenizer.load finds the subclass through a table that `import basegpt` fills.
    code = ("from basegpt.tokenizer.tokenizer import Tokenizer; "
            f"t = Tokenizer.load({str(FIXTURES / 'tokenizer_renumbered.json')!r}); "
            "print(type(t).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout == "RenumberedTokenizer\n", out.stderr[-400:]


def _gpt2_bytes(plain: Tokenizer) -> RenumberedTokenizer:
    """`plain` (no merges) with GPT-2's byte numbering: byte_to_unicode's printable bytes
    first, in order, then the rest; special tokens keep their ids."""
    spell = byte_to_unicode()
    order = sorted(range(256), key=lambda b: (ord(spell[b]) >= 256, ord(spell[b])))
    token_ids = [0] * len(plain)
    for gpt2_id, byte in enumerate(order):
        token_ids[byte] = gpt2_id
    token_ids[256:] = range(256, len(plain))
    return RenumberedTokenizer.from_tokenizer(plain, token_ids)


def test_docstring_worked_examples():
    tok = _gpt2_bytes(Tokenizer(vocab_size=258))
    assert (tok.token_ids[33], tok.token_ids[97], tok.token_ids[32]) == (0, 64, 220), \
        "GPT-2's ids of '!', 'a' and ' '"
    assert tok.encode("a!") == [64, 0] and tok.decode([64, 0]) == "a!"
    assert tok.vocab[0] == b"!" and tok.vocab[220] == b" ", "vocab is indexed by public id"

    ids = list(range(258))
    ids[97], ids[98] = 98, 97
    swapped = RenumberedTokenizer.from_tokenizer(Tokenizer(vocab_size=258), ids)
    assert swapped.encode("a") == [98] and swapped.vocab[97] == b"b"


def test_the_plain_tokenizer_cannot_be_renumbered():
    tok = Tokenizer(vocab_size=261).train("abab abab abab", progress=False)
    assert tok.token_ids is None, "a plain tokenizer's ids are its own"
    with pytest.raises(AttributeError):
        tok.token_ids = list(reversed(range(len(tok))))   # would silently do nothing
    assert tok.encode("a") == [97] and "token_ids" not in tok.to_json()


def test_hf_import_is_plain_when_ids_are_native_and_renumbered_otherwise():
    tok = Tokenizer(vocab_size=264).train("the cat sat on the mat " * 4, progress=False)
    native = from_hf_tokenizer_json(hf_tokenizer_json(tok))
    assert type(native) is Tokenizer and native.hash == tok.hash, "basegpt's own export"

    data = hf_tokenizer_json(tok)
    vocab = data["model"]["vocab"]
    a, b = vocab["a"], vocab["t"]
    vocab["a"], vocab["t"] = b, a                            # two bytes trade ids
    renumbered = from_hf_tokenizer_json(data)
    assert type(renumbered) is RenumberedTokenizer
    assert renumbered.encode("a t") == [b, 32, a], "HF's ids"
    assert renumbered.merges == tok.merges, "the merges stay native"
