"""Export a basegpt Tokenizer to tiktoken and to Hugging Face `tokenizers`, ids unchanged;
import an HF byte-level BPE tokenizer (tokenizer.json, or GPT-2's vocab.json + merges.txt).

Both peers implement byte-level BPE too, so the export is a change of notation:

- tiktoken ranks byte strings: token i's bytes get rank i. Its encoder merges the adjacent
  pair whose concatenation has the lowest rank, which is basegpt's "lowest merge id first".
- HF tokenizers stores merges as pairs of token strings and, like GPT-2, spells bytes as
  printable characters (`byte_to_unicode`: space is "Ġ", newline "Ċ", ...).

The split pattern is exported as its explicit code-point ranges (`pretokenize.render(...,
"rust")`), so all three engines cut text into the same chunks. tiktoken and tokenizers are
imported inside the functions that need them; basegpt's core never imports them.

Import reads the JSON directly (no library needed) and maps each HF merge to a basegpt merge;
HF ids may be in any order, so the imported tokenizer is a `RenumberedTokenizer` (renumbered.py)
that carries HF's ids as its numbering and encodes to exactly HF's ids (see
`from_hf_tokenizer_json`). Export writes the public ids, so a renumbered tokenizer goes back
out with the ids it came in with.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from basegpt._io import atomic_write_text
from basegpt._optional import require
from basegpt.interop.renumbered import RenumberedTokenizer
from basegpt.tokenizer import Tokenizer
from basegpt.tokenizer.pretokenize import BUILTIN_PATTERNS, render

if TYPE_CHECKING:  # for the return types only: both stay optional at run time
    import tiktoken
    import tokenizers

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


def _bpe_ids(tokenizer: Tokenizer) -> list[int]:
    """Public ids of the byte and merge tokens (everything but special tokens), in native
    order: bytes 0..255, then merge 0, merge 1, ... (a plain tokenizer's public ids are
    its native ids: token_ids is None)."""
    numbering = tokenizer.token_ids or range(len(tokenizer))
    return list(numbering[:256 + len(tokenizer.merges)])


def _check_unique_tokens(tokenizer: Tokenizer) -> None:
    # Peers key tokens by their bytes; two merges that spell the same bytes cannot be exported.
    seen: dict[bytes, int] = {}
    for token_id in _bpe_ids(tokenizer):
        data = tokenizer.vocab[token_id]
        if data in seen:
            raise ValueError(f"tokens {seen[data]} and {token_id} both spell {data!r}; "
                             "tiktoken and HF tokenizers need distinct byte strings")
        seen[data] = token_id


# ------------------------------------------------------------------------ tiktoken

def tiktoken_ranks(tokenizer: Tokenizer) -> dict[bytes, int]:
    """Byte string -> rank (= basegpt id) for every byte and merge token.

    tiktoken's rank is both the token's id and its merge priority (lowest first), so the ids
    of the merge tokens must rise in merge order. They do for every tokenizer basegpt trains
    and for GPT-2's numbering (bytes reordered, merges in order; the bytes' own ranks never
    compete, as every merge makes at least two bytes). Otherwise: ValueError.
    """
    _check_unique_tokens(tokenizer)
    ids = _bpe_ids(tokenizer)
    merge_ids = ids[256:]
    for i, (a, b) in enumerate(zip(merge_ids, merge_ids[1:])):
        if a > b:
            raise ValueError(f"cannot export to tiktoken: merge {i} has id {a} but the later "
                             f"merge {i + 1} has the smaller id {b}; tiktoken's rank is both "
                             "the id and the merge order, so this tokenizer's numbering "
                             "(token_ids) cannot be written as ranks")
    return {tokenizer.vocab[i]: i for i in ids}


def to_tiktoken(tokenizer: Tokenizer, name: str = "basegpt") -> tiktoken.Encoding:
    """A `tiktoken.Encoding` that gives exactly basegpt's ids (use its encode_ordinary, or
    encode(..., allowed_special=...) as with basegpt)."""
    tiktoken = require("tiktoken", "exporting to tiktoken")

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


def load_tiktoken(path: str | os.PathLike, name: str = "basegpt") -> tiktoken.Encoding:
    """Build a `tiktoken.Encoding` from files written by save_tiktoken."""
    tiktoken = require("tiktoken", "loading a .tiktoken file")
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
    ids = _bpe_ids(tokenizer)                  # public id of each native byte / merge token

    def text(token_id: int) -> str:
        return "".join(spell[b] for b in tokenizer.vocab[token_id])

    # Special tokens are in the vocab too, as `tokenizers` writes them: HF takes an added
    # token's id from the vocab, and would otherwise number it after the vocab, which is
    # wrong for a numbering that puts special tokens elsewhere (GPT-2-style imports).
    vocab = {text(i): i for i in ids}
    clash = sorted(set(vocab) & set(tokenizer.special_tokens))
    if clash:
        raise ValueError(f"special token {clash[0]!r} is spelled like an ordinary token in "
                         "HF's byte-level alphabet; rename it to export")
    vocab |= tokenizer.special_tokens
    vocab = dict(sorted(vocab.items(), key=lambda item: item[1]))
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
                  "vocab": vocab,
                  "merges": [[text(ids[a]), text(ids[b])] for a, b in tokenizer.merges]},
    }


def save_hf_tokenizer(tokenizer: Tokenizer, path: str | os.PathLike) -> None:
    """Write a Hugging Face tokenizer.json that `tokenizers.Tokenizer.from_file` loads."""
    atomic_write_text(path, json.dumps(hf_tokenizer_json(tokenizer), ensure_ascii=False) + "\n")


def to_hf_tokenizer(tokenizer: Tokenizer) -> tokenizers.Tokenizer:
    """A `tokenizers.Tokenizer` that gives exactly basegpt's ids."""
    hf = require("tokenizers", "exporting to Hugging Face tokenizers")
    return hf.Tokenizer.from_str(json.dumps(hf_tokenizer_json(tokenizer)))


# ------------------------------------------------------------------------ HF tokenizers -> basegpt

GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
"""GPT-2's split pattern as GPT-2 and HF tokenizers write it (the ByteLevel pre-tokenizer's
built-in regex); basegpt's "gpt2" pattern is the same regex spelled with explicit ranges."""

_BPE_DEFAULTS = {"dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                 "end_of_word_suffix": None, "byte_fallback": False, "ignore_merges": False}
"""BPE model options under which HF's BPE computes what basegpt's does; "" counts as None."""


def split_pattern_of(pre_tokenizer: dict | None) -> str:
    """The basegpt pattern name ("gpt2", "gpt4", "none") of an HF byte-level pre-tokenizer.

    Two forms are understood: GPT-2's own, `ByteLevel(use_regex=True)` (its built-in regex is
    GPT-2's pattern), and `Sequence[Split(regex), ByteLevel(use_regex=False)]` as basegpt
    exports it, where the regex must be one of basegpt's built-in patterns or GPT2_REGEX.
    Anything else is a ValueError: basegpt could not promise the same chunks.
    """
    def byte_level(step: dict, use_regex: bool) -> None:
        if step.get("add_prefix_space", False):
            raise ValueError("the ByteLevel pre-tokenizer has add_prefix_space=true (a space is "
                             "added before every text); basegpt adds none, so ids would differ")
        if step.get("use_regex", True) != use_regex:
            raise ValueError(f"unsupported ByteLevel pre-tokenizer {step}")

    if not isinstance(pre_tokenizer, dict):
        raise ValueError("tokenizer.json has no byte-level pre-tokenizer; basegpt imports "
                         "byte-level BPE tokenizers (GPT-2 style) only")
    if pre_tokenizer.get("type") == "ByteLevel":
        byte_level(pre_tokenizer, pre_tokenizer.get("use_regex", True))
        return "gpt2" if pre_tokenizer.get("use_regex", True) else "none"
    steps = pre_tokenizer.get("pretokenizers", [])
    if (pre_tokenizer.get("type") != "Sequence" or len(steps) != 2
            or steps[0].get("type") != "Split" or steps[1].get("type") != "ByteLevel"):
        raise ValueError(f"unsupported pre-tokenizer {json.dumps(pre_tokenizer)[:200]}; basegpt "
                         "imports ByteLevel, or Split(regex) followed by ByteLevel(use_regex=false)")
    byte_level(steps[1], use_regex=False)
    split = steps[0]
    if split.get("behavior") != "Isolated" or split.get("invert", False):
        raise ValueError(f"unsupported Split pre-tokenizer (behavior {split.get('behavior')!r}, "
                         f"invert {split.get('invert')!r}); basegpt needs Isolated, not inverted")
    regex = split.get("pattern", {}).get("Regex")
    known = {render(t, "rust"): name for name, t in BUILTIN_PATTERNS.items() if t}
    known |= {GPT2_REGEX: "gpt2", _WHOLE_TEXT: "none"}
    if regex not in known:
        raise ValueError(f"the split regex {str(regex)[:80]!r}... is not one of basegpt's "
                         f"patterns ({', '.join(p for p in BUILTIN_PATTERNS if p != 'none')}, "
                         "GPT-2's); basegpt cannot promise the same chunks for it")
    return known[regex]


def from_hf_tokenizer_json(data: dict, n_vocab: int | None = None) -> Tokenizer:
    """A basegpt Tokenizer that gives exactly HF's ids, from the content of an HF byte-level
    BPE tokenizer.json.

    basegpt builds tokens in native order (bytes 0..255, merge i -> 256 + i, then special
    tokens); the HF ids of the same tokens may be in any order ("!" is id 0 in GPT-2), so the
    HF id of each native token becomes the numbering of a `RenumberedTokenizer` (token_ids);
    when HF's ids are already native, the result is a plain Tokenizer. Each HF merge (a, b)
    becomes a basegpt merge of a's and b's native ids, in the same order, so both apply the
    same merges in the same priority. Added tokens become special tokens, ordered by HF id.
    `n_vocab` (the model's vocabulary) may exceed the tokenizer's: every HF id below it that no
    token uses gets a placeholder special token "<|unused_ID|>", so that len(tokenizer) ==
    n_vocab and every id has a token.
    """
    model = data.get("model") or {}
    _check_bpe_options(data, model)
    pattern = split_pattern_of(data.get("pre_tokenizer"))
    vocab: dict[str, int] = model.get("vocab") or {}
    merges = [m.split(" ") if isinstance(m, str) else m for m in model.get("merges") or []]
    pairs, hf_ids = _native_merges(vocab, merges)
    specials = _special_ids(data.get("added_tokens") or [], vocab, hf_ids, n_vocab)
    names = sorted(specials, key=specials.get)
    tokenizer = Tokenizer(vocab_size=256 + len(pairs) + len(names), pattern=pattern,
                          special_tokens=names)
    tokenizer._set(pairs, {})
    tokenizer.register_special_tokens({name: 256 + len(pairs) + k for k, name in enumerate(names)})
    token_ids = hf_ids + [specials[name] for name in names]              # native -> HF id
    if token_ids == list(range(len(token_ids))):
        return tokenizer
    return RenumberedTokenizer.from_tokenizer(tokenizer, token_ids)


def _check_bpe_options(data: dict, model: dict) -> None:
    """A ValueError for anything that would make HF's ids differ from basegpt's: a model
    other than BPE, a BPE option basegpt does not have, a normalizer."""
    if model.get("type") != "BPE":
        raise ValueError(f"tokenizer model is {model.get('type')!r}; basegpt imports BPE only")
    for key, want in _BPE_DEFAULTS.items():
        value = model.get(key) or (False if want is False else None)    # "" and absent = off
        if value != want:
            raise ValueError(f"BPE option {key}={model.get(key)!r} is not supported (basegpt "
                             f"needs {want!r}); ids would differ")
    if data.get("normalizer") is not None:
        raise ValueError(f"tokenizer has a normalizer ({data['normalizer'].get('type')}); "
                         "basegpt encodes the text unchanged, so ids would differ")


def _native_merges(vocab: dict[str, int], merges: list[list[str]]
                   ) -> tuple[list[tuple[int, int]], list[int]]:
    """HF's merges as basegpt's (pairs of native ids, in order), and the HF id of each native
    token so far: the 256 bytes, then one per merge."""
    spell = byte_to_unicode()
    unspell = {c: b for b, c in spell.items()}

    def to_bytes(token: str) -> bytes:
        try:
            return bytes(unspell[c] for c in token)
        except KeyError:
            raise ValueError(f"token {token!r} is not written in GPT-2's byte-level "
                             "alphabet; not a byte-level BPE tokenizer") from None

    missing = [b for b in range(256) if spell[b] not in vocab]
    if missing:
        raise ValueError(f"the vocabulary lacks {len(missing)} of the 256 byte tokens (e.g. "
                         f"byte {missing[0]} {spell[missing[0]]!r}); basegpt needs every byte")
    hf_ids = [vocab[spell[b]] for b in range(256)]
    known: dict[bytes, int] = {bytes([b]): b for b in range(256)}
    pairs: list[tuple[int, int]] = []
    for i, merge in enumerate(merges):
        if len(merge) != 2:
            raise ValueError(f"merge {i} {merge!r} is not a pair of tokens")
        a, b = (to_bytes(t) for t in merge)
        if a not in known or b not in known:
            raise ValueError(f"merge {i} {merge!r} uses a token no earlier merge made")
        if a + b in known:
            raise ValueError(f"merge {i} {merge!r} makes {merge[0] + merge[1]!r}, which an "
                             "earlier merge made already; basegpt needs one merge per token")
        if merge[0] + merge[1] not in vocab:
            raise ValueError(f"merge {i} {merge!r} makes {merge[0] + merge[1]!r}, which is "
                             "not in the vocabulary")
        pairs.append((known[a], known[b]))
        known[a + b] = 256 + i
        hf_ids.append(vocab[merge[0] + merge[1]])
    return pairs, hf_ids


def _special_ids(added: list[dict], vocab: dict[str, int], hf_ids: list[int],
                 n_vocab: int | None) -> dict[str, int]:
    """The special tokens, name -> HF id: HF's added tokens, then a "<|unused_ID|>" for every
    id below `n_vocab` (default: one past the largest id used) that no token has."""
    specials: dict[str, int] = {}
    used = set(hf_ids)
    for token in sorted(added, key=lambda t: t["id"]):
        if token["id"] in used:
            raise ValueError(f"added token {token['content']!r} has id {token['id']}, which "
                             "is also a byte or merge token; basegpt cannot import that")
        if not token.get("special", False):
            raise ValueError(f"added token {token['content']!r} is not special: HF finds it in "
                             "any text, basegpt's special tokens only when allowed")
        specials[token["content"]] = token["id"]
        used.add(token["id"])
    stray = {t: i for t, i in vocab.items() if i not in used}
    if stray:
        token, token_id = next(iter(stray.items()))
        raise ValueError(f"{len(stray)} vocabulary entries (e.g. {token!r}, id {token_id}) are "
                         "neither bytes, merge results nor added tokens")
    n_vocab = max(used) + 1 if n_vocab is None else n_vocab
    if max(used) >= n_vocab:
        raise ValueError(f"the tokenizer uses id {max(used)} but the model has only "
                         f"{n_vocab} rows (vocab_size)")
    for hf_id in range(n_vocab):
        if hf_id not in used:
            specials[f"<|unused_{hf_id}|>"] = hf_id
    return specials


def hf_json_from_vocab_merges(vocab: dict[str, int], merges_text: str,
                              special_tokens: list[str], add_prefix_space: bool = False) -> dict:
    """The tokenizer.json content equivalent to GPT-2's original files, vocab.json and
    merges.txt (a "#version" line, then one "a b" merge per line), for from_hf_tokenizer_json.
    `special_tokens` are the vocab entries that are special (e.g. "<|endoftext|>")."""
    merges = [line.split(" ") for line in merges_text.splitlines()
              if line and not line.startswith("#version")]
    added = [{"id": vocab[name], "content": name, "special": True}
             for name in special_tokens if name in vocab]
    return {"model": {"type": "BPE", "vocab": vocab, "merges": merges},
            "normalizer": None, "added_tokens": added,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": add_prefix_space,
                              "use_regex": True}}
