"""Export a basegpt Tokenizer to tiktoken and to Hugging Face `tokenizers`, ids unchanged.

Both peers implement byte-level BPE too, so the export is a change of notation:

- tiktoken ranks byte strings: token i's bytes get rank i. Its encoder merges the adjacent
  pair whose concatenation has the lowest rank, which is basegpt's "lowest merge id first".
- HF tokenizers stores merges as pairs of token strings and, like GPT-2, spells bytes as
  printable characters (`byte_to_unicode`: space is "Ġ", newline "Ċ", ...).

The split pattern is exported as its explicit code-point ranges (`pretokenize.render(...,
"rust")`), so all three engines cut text into the same chunks. tiktoken and tokenizers are
imported inside the functions that need them; basegpt's core never imports them.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from basegpt._io import atomic_write_text
from basegpt.tokenizer import Tokenizer
from basegpt.tokenizer.pretokenize import render

_WHOLE_TEXT = r"[\s\S]+"
"""Pattern 'none' for peers: every document is one chunk."""


def peer_pattern(tokenizer: Tokenizer) -> str:
    """The tokenizer's split pattern in the regex dialect of tiktoken and HF tokenizers.

    Custom patterns are passed through as written: they work where the Python regex is also
    valid for the peer's engine, which basegpt cannot check.
    """
    splitter = tokenizer.splitter
    if splitter.name == "none":
        return _WHOLE_TEXT
    if splitter.name == "custom":
        return splitter.pattern
    return render(splitter.template, "rust")


def _check_unique_tokens(tokenizer: Tokenizer) -> None:
    # Peers key tokens by their bytes; two merges that spell the same bytes cannot be exported.
    seen: dict[bytes, int] = {}
    for token_id in range(256 + len(tokenizer.merges)):
        data = tokenizer.vocab[token_id]
        if data in seen:
            raise ValueError(f"tokens {seen[data]} and {token_id} both spell {data!r}; "
                             "tiktoken and HF tokenizers need distinct byte strings")
        seen[data] = token_id


# ------------------------------------------------------------------------ tiktoken

def tiktoken_ranks(tokenizer: Tokenizer) -> dict[bytes, int]:
    """Byte string -> rank (= basegpt id) for every byte and merge token."""
    _check_unique_tokens(tokenizer)
    return {tokenizer.vocab[i]: i for i in range(256 + len(tokenizer.merges))}


def to_tiktoken(tokenizer: Tokenizer, name: str = "basegpt"):
    """A `tiktoken.Encoding` that gives exactly basegpt's ids (use its encode_ordinary, or
    encode(..., allowed_special=...) as with basegpt)."""
    import tiktoken  # optional dependency, only for this export

    return tiktoken.Encoding(name=name, pat_str=peer_pattern(tokenizer),
                             mergeable_ranks=tiktoken_ranks(tokenizer),
                             special_tokens=dict(tokenizer.special_tokens),
                             explicit_n_vocab=len(tokenizer))


def save_tiktoken(tokenizer: Tokenizer, path: str | os.PathLike) -> tuple[Path, Path]:
    """Write `path` (a .tiktoken rank file: base64 bytes, space, rank per line) and a JSON
    beside it (same name + .json) with the split pattern and special tokens."""
    path = Path(path)
    lines = [f"{base64.b64encode(data).decode('ascii')} {rank}"
             for data, rank in tiktoken_ranks(tokenizer).items()]
    atomic_write_text(path, "\n".join(lines) + "\n")
    meta_path = path.with_name(path.name + ".json")
    meta = {"pat_str": peer_pattern(tokenizer), "special_tokens": tokenizer.special_tokens,
            "n_vocab": len(tokenizer), "basegpt_hash": tokenizer.hash}
    atomic_write_text(meta_path, json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    return path, meta_path


def load_tiktoken(path: str | os.PathLike, name: str = "basegpt"):
    """Build a `tiktoken.Encoding` from files written by save_tiktoken."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    path = Path(path)
    meta = json.loads(path.with_name(path.name + ".json").read_text(encoding="utf-8"))
    return tiktoken.Encoding(name=name, pat_str=meta["pat_str"],
                             mergeable_ranks=load_tiktoken_bpe(str(path)),
                             special_tokens=meta["special_tokens"],
                             explicit_n_vocab=meta["n_vocab"])


# ------------------------------------------------------------------------ HF tokenizers

def byte_to_unicode() -> dict[int, str]:
    """GPT-2's printable spelling of bytes: printable Latin-1 bytes stand for themselves,
    the other 68 (controls, space, ...) get the characters from U+0100 on, in byte order.

        byte_to_unicode()[ord("a")] -> "a"    [32] -> "Ġ"    [10] -> "Ċ"
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def hf_tokenizer_json(tokenizer: Tokenizer) -> dict:
    """The content of a Hugging Face tokenizer.json for `tokenizer` (no import needed)."""
    _check_unique_tokens(tokenizer)
    spell = byte_to_unicode()

    def text(token_id: int) -> str:
        return "".join(spell[b] for b in tokenizer.vocab[token_id])

    n_vocab = 256 + len(tokenizer.merges)
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": token_id, "content": name, "single_word": False,
                          "lstrip": False, "rstrip": False, "normalized": False,
                          "special": True}
                         for name, token_id in sorted(tokenizer.special_tokens.items(),
                                                      key=lambda item: item[1])],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": peer_pattern(tokenizer)},
             "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
             "use_regex": False}]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                    "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {text(i): i for i in range(n_vocab)},
                  "merges": [[text(a), text(b)] for a, b in tokenizer.merges]},
    }


def save_hf_tokenizer(tokenizer: Tokenizer, path: str | os.PathLike) -> None:
    """Write a Hugging Face tokenizer.json that `tokenizers.Tokenizer.from_file` loads."""
    atomic_write_text(path, json.dumps(hf_tokenizer_json(tokenizer), ensure_ascii=False) + "\n")


def to_hf_tokenizer(tokenizer: Tokenizer):
    """A `tokenizers.Tokenizer` that gives exactly basegpt's ids."""
    from tokenizers import Tokenizer as HFTokenizer  # optional dependency

    return HFTokenizer.from_str(json.dumps(hf_tokenizer_json(tokenizer)))
