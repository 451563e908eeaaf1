"""The Tokenizer: byte-level BPE from train to encode, decode, save and load.

Text -> UTF-8 bytes -> chunks (the split pattern) -> byte ids 0..255 -> merges applied in the
order they were learned -> token ids. Decoding concatenates each id's bytes, so
decode(encode(s)) == s for every string that is valid UTF-8: no text is ever lost, because
every byte has a token of its own.

    tok = Tokenizer(vocab_size=263).train("hello hello hello")   # 256 + 5 merges + 2 special
    tok.encode("hello")  -> [259]         (merges 256..259 build "hello" from its bytes)
    tok.encode(" hello") -> [260]         (the fifth merge: " " + "hello")
    tok.decode([104, 105]) -> "hi"

Ids: 0..255 are the bytes, 256 .. 256+M-1 the M merges (merge i makes id 256 + i), then the
special tokens (end-of-text, pad, ...). len(tokenizer) counts them all.

These are the only ids this class knows: encode's output, decode's input, vocab, merges,
ranks and special_tokens all use them. A tokenizer imported from elsewhere may number the same
tokens differently (GPT-2 puts "!" at 0); that renumbering is a subclass's job,
`basegpt.interop.renumbered.RenumberedTokenizer`, which adds one field to tokenizer.json.

Special tokens are safe by default: the text "<|endoftext|>" inside user input is encoded as
ordinary text, so a document cannot forge a document boundary; pass allowed_special to let
special-token text through as the special id.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import re
import warnings
from collections.abc import Collection, Iterable, Iterator, Sequence
from pathlib import Path

from basegpt._io import atomic_write_text
from basegpt.tokenizer.bpe_reference import Pair, merge
from basegpt.tokenizer.pretokenize import BUILTIN_PATTERNS, DEFAULT_PATTERN, Splitter
from basegpt.tokenizer.trainer import iter_documents, learn_merges

try:  # the optional C extension; see setup.py
    from basegpt.tokenizer import _bpe
except ImportError:
    _bpe = None

EOT = "<|endoftext|>"
PAD = "<|pad|>"
DEFAULT_SPECIAL_TOKENS = (EOT, PAD)
FORMAT_NAME = "basegpt.tokenizer"
FORMAT_VERSION = 1

_CACHE_LIMIT = 1 << 18
"""Chunks remembered by encode; the cache is emptied when it grows past this."""
_SHORT_CHUNK = 32
"""Chunks up to this many bytes are merged by rescanning (fast for short); longer by a heap."""


class Tokenizer:
    """Byte-level BPE tokenizer, trained from scratch.

    Args:
        vocab_size: the full vocabulary wanted, special tokens included (len(tokenizer)
            equals it after training, unless the corpus runs out of pairs to merge first,
            which train() warns about).
        pattern: how text is pre-split before merging: "gpt4" (default), "gpt2", "none" (the
            original design's pure BPE over whole documents) or a custom Python regex.
            See `pretokenize.py` for why gpt4 is the default.
        special_tokens: names of the special tokens, given ids right after the merges.

    Attributes: `merges` (the learned pairs; merge i makes id 256 + i), `ranks` (pair -> the
    id it makes), `vocab` (id -> bytes) and `special_tokens` (name -> id).
    """

    def __init__(self, vocab_size: int = 4096, pattern: str = DEFAULT_PATTERN,
                 special_tokens: Sequence[str] = DEFAULT_SPECIAL_TOKENS) -> None:
        special_tokens = tuple(special_tokens)
        _check_special_names(special_tokens)
        if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
            raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__} "
                            f"{vocab_size!r}; e.g. Tokenizer(vocab_size=4096)")
        if vocab_size < 256 + len(special_tokens):
            raise ValueError(f"vocab_size={vocab_size!r} is too small: it needs the 256 byte "
                             f"tokens plus {len(special_tokens)} special tokens, so at least "
                             f"{256 + len(special_tokens)}")
        self.vocab_size = vocab_size
        self.splitter = Splitter(pattern)
        self._set(merges=[], special_tokens={name: 256 + i
                                             for i, name in enumerate(special_tokens)})

    # ---------------------------------------------------------------- state

    def _set(self, merges: list[Pair], special_tokens: dict[str, int]) -> None:
        """Install merges and special tokens and rebuild everything derived from them."""
        self.merges: list[Pair] = [tuple(pair) for pair in merges]
        self.ranks: dict[Pair, int] = {pair: 256 + i for i, pair in enumerate(self.merges)}
        vocab = [bytes([b]) for b in range(256)]
        for a, b in self.merges:
            vocab.append(vocab[a] + vocab[b])
        vocab += [b""] * len(special_tokens)
        for name, token_id in special_tokens.items():
            vocab[token_id] = name.encode("utf-8")
        self.vocab: list[bytes] = vocab
        self.special_tokens: dict[str, int] = dict(special_tokens)
        self._cache: dict[str, list[int]] = {}
        self._c_encoder = None

    @property
    def token_ids(self) -> None:
        """None: this tokenizer's ids are its own. (RenumberedTokenizer gives, for each of its
        own ids, the other tokenizer's id here; code that handles both reads it.)"""
        return None

    def __len__(self) -> int:
        """The full vocabulary: 256 bytes + merges + special tokens."""
        return len(self.vocab)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(vocab={len(self)}, merges={len(self.merges)}, "
                f"pattern={self.splitter.name!r}, "
                f"special_tokens={self.special_tokens})")

    @property
    def eot_id(self) -> int:
        """Id of the end-of-text token that separates documents."""
        return self._special_id(EOT)

    @property
    def pad_id(self) -> int:
        """Id of the padding token."""
        return self._special_id(PAD)

    def _special_id(self, name: str) -> int:
        if name not in self.special_tokens:
            raise ValueError(f"this tokenizer has no {name} token (its special tokens are "
                             f"{sorted(self.special_tokens)}); create it with {name} among "
                             "special_tokens")
        return self.special_tokens[name]

    # ---------------------------------------------------------------- training

    def train(self, texts: str | os.PathLike | Iterable[str | os.PathLike], *,
              backend: str = "auto", progress: bool = True) -> Tokenizer:
        """Learn merges from text, replacing any earlier training. Returns self.

        `texts` is one string, or an iterable of strings (documents) and/or paths of files
        or folders (pathlib.Path; files are read in blocks, so memory grows with unique
        chunks, not corpus size). Merges never cross two documents. backend: "auto", "c",
        "python", "reference". No text at all is a ValueError; text that runs out of pairs
        to merge before vocab_size is reached gives a smaller vocabulary, with a warning.
        """
        is_bytes = isinstance(texts, (bytes, bytearray))
        if is_bytes or not isinstance(texts, (str, os.PathLike, Iterable)):
            raise TypeError(f"texts must be a str, a path or a list of them, got "
                            f"{type(texts).__name__}"
                            + (": decode it first, data.decode('utf-8')" if is_bytes else ""))
        n_merges = self.vocab_size - 256 - len(self.special_tokens)
        n_chars = 0

        def documents() -> Iterator[str]:
            nonlocal n_chars
            for text in iter_documents(texts, self.splitter):
                _check_utf8(text)
                n_chars += len(text)
                yield text
        merges = learn_merges(documents(), self.splitter, n_merges, backend, progress)
        if n_chars == 0:
            raise ValueError("no text to train on: the input holds no characters (no "
                             "documents, or only empty ones and empty files); pass text, or "
                             "files or folders that have some")
        n_vocab = 256 + len(merges)
        names = sorted(self.special_tokens, key=self.special_tokens.get)
        self._set(merges, {name: n_vocab + i for i, name in enumerate(names)})
        if len(merges) < n_merges:
            warnings.warn(f"learned only {len(merges)} of the {n_merges} merges that "
                          f"vocab_size={self.vocab_size} asks for: every chunk of the text is "
                          f"already one token; the vocabulary has {len(self)} tokens. Train "
                          f"on more text, or ask for vocab_size={len(self)}", stacklevel=2)
        return self

    def trainTokenizer(self, text: str | Iterable[str]) -> Tokenizer:  # noqa: N802
        """The original design's name for `train` (kept so its usage example runs as is)."""
        return self.train(text)

    def register_special_tokens(self, special_tokens: dict[str, int]) -> None:
        """Replace the special tokens by `special_tokens` (name -> explicit id).

        The ids must be exactly 256 + len(merges) ... len(tokenizer) - 1, each once, so the
        vocabulary has no holes and no special token shadows a byte or merge token.
        """
        _check_special_names(tuple(special_tokens))
        first = 256 + len(self.merges)
        expected = set(range(first, first + len(special_tokens)))
        ids = list(special_tokens.values())
        if len(set(ids)) != len(ids):
            raise ValueError(f"special token ids must be distinct, got {special_tokens}")
        if set(ids) != expected:
            raise ValueError(f"special token ids {sorted(ids)} must be exactly "
                             f"{sorted(expected)}: the ids right after the {len(self.merges)} "
                             "merges, so none collides with a byte or merge token")
        self._set(self.merges, special_tokens)

    # ---------------------------------------------------------------- encode

    def encode(self, text: str, allowed_special: str | Collection[str] = ()) -> list[int]:
        """Token ids of `text`.

        allowed_special: special tokens whose text is turned into their id ("all" for every
        one). By default none: "<|endoftext|>" in the text is encoded as ordinary characters.
        Raises ValueError for strings that are not valid UTF-8 (lone surrogates).
        """
        if not isinstance(text, str):
            raise TypeError(f"encode expects str, got {type(text).__name__}")
        allowed = self._allowed_special(allowed_special)
        if not allowed:
            return self._encode_ordinary(text)
        pattern = "|".join(re.escape(name) for name in sorted(allowed, key=len, reverse=True))
        ids: list[int] = []
        start = 0
        for match in re.finditer(pattern, text):
            ids += self._encode_ordinary(text[start:match.start()])
            ids.append(self.special_tokens[match.group()])
            start = match.end()
        ids += self._encode_ordinary(text[start:])
        return ids

    def encode_batch(self, texts: Iterable[str],
                     allowed_special: str | Collection[str] = ()) -> list[list[int]]:
        """encode() over many texts, sharing one chunk cache."""
        return [self.encode(text, allowed_special) for text in texts]

    def _allowed_special(self, allowed_special: str | Collection[str]) -> set[str]:
        if allowed_special == "all":
            return set(self.special_tokens)
        if isinstance(allowed_special, str):
            raise ValueError(f"allowed_special must be 'all' or a collection of special token "
                             f"names, got the string {allowed_special!r}")
        unknown = set(allowed_special) - set(self.special_tokens)
        if unknown:
            raise ValueError(f"unknown special tokens {sorted(unknown)}; this tokenizer has "
                             f"{sorted(self.special_tokens)}")
        return set(allowed_special)

    def _encode_ordinary(self, text: str) -> list[int]:
        """Encode text with no special tokens: split, then merge each chunk (cached)."""
        _check_utf8(text)
        encoder = self._c_encoder_if_usable()
        if encoder is not None:
            return encoder.encode(text)    # the same ids, computed in C (see below)
        ids = []
        cache = self._cache
        for chunk in self.splitter.split(text):
            chunk_ids = cache.get(chunk)
            if chunk_ids is None:
                chunk_ids = self._encode_chunk(chunk.encode("utf-8"))
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cache[chunk] = chunk_ids
            ids += chunk_ids
        return ids

    def _encode_chunk(self, data: bytes) -> list[int]:
        """Apply the merges, lowest id first, to one chunk's bytes."""
        if len(data) <= _SHORT_CHUNK:
            return encode_chunk_simple(data, self.ranks)
        return encode_chunk_heap(data, self.ranks)

    # ---------------------------------------------------------------- C encode hook

    use_c_encoder: bool = True
    """Encode with the C extension (`_bpe.Encoder`: split, cache and merge in C) when it is
    compiled and the pattern is built in. False, on the class or on one tokenizer, forces the
    Python path; both give the same ids (tests/test_tokenizer_c.py)."""

    def _c_encoder_if_usable(self):
        """The C Encoder for the current merges, or None where the Python path must run."""
        if not self.use_c_encoder or _bpe is None or self.splitter.name not in _bpe.PATTERNS:
            return None
        if self._c_encoder is None:    # built on first use; _set() drops it when merges change
            self._c_encoder = _bpe.Encoder(self.merges, self.splitter.name, _CACHE_LIMIT)
        return self._c_encoder

    # ---------------------------------------------------------------- decode

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes that `ids` stand for (special tokens as their UTF-8 text)."""
        vocab = self.vocab
        ids = _as_int_list(ids)
        try:
            # A bool would index vocab as 0 or 1; `in` over map(type, ...) stays in C.
            if min(ids, default=0) < 0 or bool in map(type, ids):
                raise IndexError
            return b"".join([vocab[i] for i in ids])
        except (IndexError, TypeError):
            _bad_id(ids, len(vocab))

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """The text of `ids`. Bytes that are not valid UTF-8 (a multi-byte character cut in
        two, say) become U+FFFD with errors="replace" (default); errors="strict" raises a
        ValueError that says where."""
        if errors not in ("replace", "strict"):
            raise ValueError(f"errors must be 'replace' or 'strict', got {errors!r}")
        data = self.decode_bytes(ids)
        try:
            return data.decode("utf-8", errors=errors)
        except UnicodeDecodeError as error:
            raise ValueError(f"ids do not decode to valid UTF-8 (byte {error.start} of "
                             f"{len(data)}: {error.reason}); use errors='replace' to get "
                             "U+FFFD instead") from None

    def token_text(self, token_id: int) -> str:
        """One token's bytes for display: valid UTF-8 as text, other bytes as \\xNN escapes,
        control characters escaped: token_text(10) -> '\\n'."""
        data = self.decode_bytes([token_id])
        text = data.decode("utf-8", errors="backslashreplace")
        return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)

    # ---------------------------------------------------------------- save / load

    @property
    def hash(self) -> str:
        """sha256 of what defines the tokenizer (pattern, merges, special tokens).

        Two tokenizers with the same hash encode every text identically; model checkpoints
        store it to catch a model being paired with the wrong tokenizer.
        """
        canonical = json.dumps(self._hashed_fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def _hashed_fields(self) -> dict:
        """What `hash` covers; a subclass that changes what encode returns adds its fields."""
        return {"pattern": self._pattern_dict(), "merges": self.merges,
                "special_tokens": self.special_tokens}

    def _pattern_dict(self) -> dict[str, str]:
        if self.splitter.name == "custom":
            return {"name": "custom", "regex": self.splitter.pattern}
        return {"name": self.splitter.name}

    def to_json(self) -> str:
        """The tokenizer.json text: versioned, one merge per line, human-readable."""
        return "{\n" + ",\n".join(self._json_fields()) + "\n}\n"

    def _json_fields(self) -> list[str]:
        """tokenizer.json's fields as indented `"name": value` text, in file order; a subclass
        appends its own (and registers their name in FILE_FIELDS, so that load finds it)."""
        header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "vocab_size": len(self),
                  "pattern": self._pattern_dict(), "special_tokens": self.special_tokens,
                  "hash": self.hash}
        fields = [f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}"
                  for k, v in header.items()]
        merges = ",\n".join(f"    [{a}, {b}]" for a, b in self.merges)
        fields.append(f'  "merges": [\n{merges}\n  ]' if self.merges else '  "merges": []')
        return fields

    def save(self, path: str | os.PathLike) -> None:
        """Write tokenizer.json to `path` atomically."""
        _check_file_path(path, "tokenizer.json")
        atomic_write_text(path, self.to_json())

    def save_vocab(self, path: str | os.PathLike) -> None:
        """Write a .vocab file for people: one line per token, with what it merges from.

            261  ' the'  <- [256 ' t'] [104 'he']

        Lines in id order.
        """
        _check_file_path(path, "tokenizer.vocab")
        specials = set(self.special_tokens.values())
        lines = []
        for token_id in range(len(self)):
            line = f"{token_id}\t{_show(self, token_id)}"
            parts = self._merge_parts(token_id)
            if parts is not None:
                a, b = parts
                line += f"\t<- [{a} {_show(self, a)}] [{b} {_show(self, b)}]"
            elif token_id in specials:
                line += "\t(special)"
            lines.append(line)
        atomic_write_text(path, "\n".join(lines) + "\n")

    def _merge_parts(self, token_id: int) -> Pair | None:
        """The two ids that merge into token_id, or None for a byte or special token."""
        if 256 <= token_id < 256 + len(self.merges):
            return self.merges[token_id - 256]
        return None

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """Read a tokenizer.json, checking everything; errors name the file and the problem."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such tokenizer file; train one with "
                                    "`basegpt tokenizer train --out PATH`")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path} is not valid JSON ({error}); the file is damaged or is "
                             "not a basegpt tokenizer") from None
        try:
            return cls.from_dict(data)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None

    @classmethod
    def from_dict(cls, data: dict) -> Tokenizer:
        """Build a tokenizer from parsed tokenizer.json content, validating every field.

        A file with a field that a subclass registered in FILE_FIELDS is built as that
        subclass ("token_ids": RenumberedTokenizer); any other file as `cls`.
        """
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise ValueError(f"not a basegpt tokenizer (format field should be {FORMAT_NAME!r})")
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"unknown tokenizer format version {data.get('version')!r}; this "
                             f"basegpt reads version {FORMAT_VERSION} (upgrade basegpt?)")
        missing = {"vocab_size", "pattern", "merges", "special_tokens", "hash"} - set(data)
        if missing:
            raise ValueError(f"missing fields {sorted(missing)}")
        pattern = data["pattern"]
        if not isinstance(pattern, dict) or "name" not in pattern:
            raise ValueError(f"pattern must be {{'name': ...}}, got {pattern!r}")
        if pattern["name"] not in (*BUILTIN_PATTERNS, "custom"):
            raise ValueError(f"unknown pattern name {pattern['name']!r}; expected one of "
                             f"{sorted(BUILTIN_PATTERNS)} or 'custom' with a 'regex'")
        regex = pattern.get("regex") if pattern["name"] == "custom" else pattern["name"]
        merges = _checked_merges(data["merges"])
        specials = data["special_tokens"]
        if not isinstance(specials, dict) or not all(isinstance(v, int) for v in specials.values()):
            raise ValueError(f"special_tokens must map names to integer ids, got {specials!r}")
        n_vocab = 256 + len(merges) + len(specials)
        if data["vocab_size"] != n_vocab or isinstance(data["vocab_size"], bool):
            raise ValueError(f"vocab_size is {data['vocab_size']!r} but the file defines "
                             f"{n_vocab} tokens (256 bytes + {len(merges)} merges + "
                             f"{len(specials)} special tokens); it was edited or corrupted")
        kind = next((FILE_FIELDS[name] for name in data if name in FILE_FIELDS), cls)
        tokenizer = kind._from_fields(regex, merges, specials, data)
        if tokenizer.hash != data["hash"]:
            raise ValueError(f"hash mismatch: the file says {data['hash']!r} but its content "
                             f"hashes to {tokenizer.hash!r}; it was edited or corrupted")
        return tokenizer

    @classmethod
    def _from_fields(cls, pattern: str, merges: list[Pair], special_tokens: dict[str, int],
                     data: dict) -> Tokenizer:
        """A tokenizer from tokenizer.json's checked fields; `data` is the whole file, for a
        subclass that reads fields of its own. Ids that do not fit are a ValueError."""
        tokenizer = cls(vocab_size=256 + len(merges) + len(special_tokens), pattern=pattern,
                        special_tokens=tuple(special_tokens))
        tokenizer._set(merges, {})
        tokenizer.register_special_tokens(special_tokens)
        return tokenizer


FILE_FIELDS: dict[str, type[Tokenizer]] = {}
"""tokenizer.json field -> the Tokenizer subclass that wrote it, for `from_dict` to build.
Filled by the module that defines the subclass; `import basegpt` imports every such module
(basegpt/__init__.py), so the table is full before any file can be read."""


# -------------------------------------------------------------------- merging one chunk

def encode_chunk_simple(data: bytes, ranks: dict[Pair, int]) -> list[int]:
    """Merge the lowest-id pair present, everywhere, until no pair has a merge.

    Lowest id first equals "in the order learned": a pair that appears after merging id r
    contains r, so its own merge was learned after r. O(n^2): for short chunks.
    """
    ids = list(data)
    while len(ids) >= 2:
        pair = min(zip(ids, ids[1:]), key=lambda p: ranks.get(p, 1 << 62))
        new_id = ranks.get(pair)
        if new_id is None:
            break
        ids = merge(ids, pair, new_id)
    return ids


def encode_chunk_heap(data: bytes, ranks: dict[Pair, int]) -> list[int]:
    """The same result as encode_chunk_simple in O(n log n), for long chunks.

    Tokens live in a doubly linked list; a heap holds (merge id, position) for every
    adjacent pair that has a merge. Popping the smallest merges lowest id first and, among
    equal ids, leftmost first, as the simple version does. Entries made stale by an earlier
    merge are recognised (the pair at that position changed) and skipped.
    """
    ids = list(data)
    n = len(ids)
    nxt = list(range(1, n + 1))        # nxt[i] == n: no next token
    prv = list(range(-1, n - 1))
    alive = [True] * n
    heap = [(ranks[p], i) for i, p in enumerate(zip(ids, ids[1:])) if p in ranks]
    heapq.heapify(heap)
    while heap:
        new_id, i = heapq.heappop(heap)
        j = nxt[i] if alive[i] else n
        if j >= n or ranks.get((ids[i], ids[j])) != new_id:
            continue                   # stale: one of the two tokens was merged away
        ids[i] = new_id                # merge j into i
        alive[j] = False
        nxt[i] = nxt[j]
        if nxt[j] < n:
            prv[nxt[j]] = i
        if prv[i] >= 0 and (r := ranks.get((ids[prv[i]], new_id))) is not None:
            heapq.heappush(heap, (r, prv[i]))
        if nxt[i] < n and (r := ranks.get((new_id, ids[nxt[i]]))) is not None:
            heapq.heappush(heap, (r, i))
    return [token for token, keep in zip(ids, alive) if keep]


# -------------------------------------------------------------------- validation helpers

def _check_special_names(names: tuple[str, ...]) -> None:
    if any(not isinstance(n, str) or not n for n in names):
        raise ValueError(f"special token names must be non-empty strings, got {names!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"special token names must be distinct, got {names!r}")


def _check_file_path(path: str | os.PathLike, name: str) -> None:
    # Caught here, not by the rename, whose error would name the temp file.
    if Path(path).is_dir():
        raise ValueError(f"{path} is a folder; give the path of the file to write, "
                         f"e.g. {Path(path) / name}")


def _check_utf8(text: str) -> None:
    # Lone surrogates (from bad decoding, e.g. surrogateescape) have no UTF-8 form.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"text has a lone surrogate U+{ord(text[error.start]):04X} at "
                         f"index {error.start}, which is not valid Unicode text; clean the "
                         "input, e.g. s.encode('utf-8', 'replace').decode()") from None


def _checked_merges(merges: object) -> list[Pair]:
    if not isinstance(merges, list):
        raise ValueError("merges must be a list of [left, right] id pairs")
    seen: set[Pair] = set()
    out: list[Pair] = []
    for i, item in enumerate(merges):
        if (not isinstance(item, list) or len(item) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in item)):
            raise ValueError(f"merge {i} is {item!r}; each merge must be [left id, right id]")
        pair = (item[0], item[1])
        if not all(0 <= x < 256 + i for x in pair):
            raise ValueError(f"merge {i} {list(pair)} refers to an id that is not defined yet "
                             f"(merge {i} may only use ids below {256 + i})")
        if pair in seen:
            raise ValueError(f"merge {i} {list(pair)} is a duplicate of an earlier merge")
        seen.add(pair)
        out.append(pair)
    return out


def _as_int_list(ids: Iterable[int]) -> list[int]:
    if hasattr(ids, "tolist"):       # numpy arrays and torch tensors
        ids = ids.tolist()
    return ids if isinstance(ids, list) else list(ids)


def _bad_id(ids: list, vocab_size: int) -> None:
    for i in ids:
        if not isinstance(i, int) or isinstance(i, bool):
            raise TypeError(f"token ids must be integers, got {i!r} ({type(i).__name__})")
        if not 0 <= i < vocab_size:
            raise ValueError(f"token id {i} is out of range: the vocabulary has {vocab_size} "
                             f"ids (0..{vocab_size - 1})")
    raise AssertionError("unreachable: _bad_id found no bad id")


def _show(tokenizer: Tokenizer, token_id: int) -> str:
    return "'" + tokenizer.token_text(token_id) + "'"
