"""RenumberedTokenizer: basegpt's BPE speaking another tokenizer's token ids.

basegpt numbers tokens by how they are built ("native" ids): bytes 0..255, merge i -> 256 + i,
then the special tokens. A tokenizer from elsewhere can hold exactly the same tokens and merges
under other numbers, and a model trained with it knows only those numbers (they index its
embedding rows). GPT-2, for one, numbers its 256 byte tokens printable characters first:

    byte        "!" (33)   "a" (97)   " " (32)   first merge " t"   "<|endoftext|>"
    native id      33         97         32          256                50256
    GPT-2 id        0         64        220          256                50256

So an imported GPT-2 tokenizer is the same BPE with one table, token_ids (native id -> public
id, a permutation): token_ids[33] == 0, token_ids[97] == 64, token_ids[32] == 220, ...

    tok.encode("a!")  ->  native [97, 33]  ->  public [64, 0]
    tok.decode([64, 0]) == "a!"              (vocab is indexed by public id)

The subclass renumbers at the edges only: the output of ordinary encoding, and the tables
that users index (vocab, special_tokens) are public; merges and ranks stay native, so the
merging itself is the core Tokenizer's, unchanged. tokenizer.json gets one more field,
"token_ids", which is also how `Tokenizer.load` knows to build this class (FILE_FIELDS).
As in minbpe, where GPT4Tokenizer keeps GPT-4's byte permutation in a subclass of its
RegexTokenizer, the core never sees a numbering.
"""

from __future__ import annotations

from collections.abc import Sequence

from basegpt.tokenizer.bpe_reference import Pair
from basegpt.tokenizer.tokenizer import FILE_FIELDS, Tokenizer

_IDS_PER_LINE = 32
"""tokenizer.json writes token_ids this many ids per line."""


class RenumberedTokenizer(Tokenizer):
    """A Tokenizer whose ids are another tokenizer's: token_ids[native id] == public id.

    Everything public (encode's output, decode's input, vocab, special_tokens, eot_id) uses
    the public ids; merges and ranks stay native. token_ids is None for the identity, and then
    the tokenizer, its hash and its file are exactly a plain Tokenizer's. Training resets it
    to None (the new merges have no numbering of their own).

        plain = Tokenizer(vocab_size=258)            # no merges: token i is byte i
        ids = list(range(258)); ids[97], ids[98] = 98, 97
        tok = RenumberedTokenizer.from_tokenizer(plain, ids)
        tok.encode("a") -> [98]    tok.vocab[97] -> b"b"
    """

    @classmethod
    def from_tokenizer(cls, tokenizer: Tokenizer,
                       token_ids: Sequence[int] | None) -> RenumberedTokenizer:
        """`tokenizer`'s pattern, merges and special tokens with the numbering `token_ids`
        (a permutation of range(len(tokenizer)), public id of each native id; None or the
        identity for none)."""
        native_specials = (tokenizer._native_specials if isinstance(tokenizer, cls)
                           else tokenizer.special_tokens)
        renumbered = cls(vocab_size=tokenizer.vocab_size, special_tokens=tuple(native_specials))
        renumbered.splitter = tokenizer.splitter          # immutable once built: safe to share
        renumbered._set(tokenizer.merges, native_specials, token_ids)
        return renumbered

    def _set(self, merges: list[Pair], special_tokens: dict[str, int],
             token_ids: Sequence[int] | None = None) -> None:
        """Install merges and special tokens (native ids), as Tokenizer._set, then the
        numbering; the core calls it without one (training), which is the identity."""
        if token_ids is not None:     # checked first: a bad numbering changes nothing
            token_ids = _checked_token_ids(token_ids, 256 + len(merges) + len(special_tokens))
        super()._set(merges, special_tokens)
        self._native_specials = dict(special_tokens)
        self._token_ids = public = token_ids
        self._native_of: list[int] | None = None
        if public is not None:
            vocab = [b""] * len(self.vocab)
            for native, data in enumerate(self.vocab):
                vocab[public[native]] = data
            self.vocab = vocab
            self.special_tokens = {name: public[i] for name, i in special_tokens.items()}
            self._native_of = [0] * len(public)
            for native, token_id in enumerate(public):
                self._native_of[token_id] = native

    @property
    def token_ids(self) -> tuple[int, ...] | None:
        """The numbering: token_ids[native id] == public id, or None for the identity.

        Set it to a permutation of range(len(tokenizer)) (a list or tuple; the identity is
        stored as None); anything else is a ValueError.
        """
        return self._token_ids

    @token_ids.setter
    def token_ids(self, token_ids: Sequence[int] | None) -> None:
        self._set(self.merges, self._native_specials, token_ids)

    def register_special_tokens(self, special_tokens: dict[str, int]) -> None:
        """Tokenizer.register_special_tokens, in native ids: only without a numbering (set
        token_ids afterwards)."""
        if self._token_ids is not None:
            raise ValueError("register_special_tokens needs native ids, but this tokenizer has "
                             "a token numbering (token_ids); register the special tokens "
                             "first, then set token_ids")
        super().register_special_tokens(special_tokens)

    def _encode_ordinary(self, text: str) -> list[int]:
        ids = super()._encode_ordinary(text)        # native ids, from the C or Python path
        public = self._token_ids
        return ids if public is None else [public[i] for i in ids]

    def _merge_parts(self, token_id: int) -> Pair | None:
        if self._native_of is None:
            return super()._merge_parts(token_id)
        parts = super()._merge_parts(self._native_of[token_id])
        return None if parts is None else (self._token_ids[parts[0]], self._token_ids[parts[1]])

    def _hashed_fields(self) -> dict:
        # Only with a numbering, so an identity-numbered tokenizer hashes as a plain one.
        fields = super()._hashed_fields()
        if self._token_ids is not None:
            fields["token_ids"] = list(self._token_ids)
        return fields

    def _json_fields(self) -> list[str]:
        fields = super()._json_fields()
        if self._token_ids is not None:
            rows = [self._token_ids[i:i + _IDS_PER_LINE]
                    for i in range(0, len(self._token_ids), _IDS_PER_LINE)]
            numbering = ",\n".join("    " + ", ".join(map(str, row)) for row in rows)
            fields.append(f'  "token_ids": [\n{numbering}\n  ]')
        return fields

    @classmethod
    def _from_fields(cls, pattern: str, merges: list[Pair], special_tokens: dict[str, int],
                     data: dict) -> RenumberedTokenizer:
        # The file's special ids are public: make them native for the core, then renumber.
        token_ids = data.get("token_ids")
        if token_ids is not None:
            token_ids = _checked_token_ids(token_ids, 256 + len(merges) + len(special_tokens))
            native_of = {token_id: native for native, token_id in enumerate(token_ids or ())}
            special_tokens = {name: native_of.get(i, i)      # ids out of range: the core says so
                              for name, i in special_tokens.items()}
        tokenizer = super()._from_fields(pattern, merges, special_tokens, data)
        tokenizer.token_ids = token_ids
        return tokenizer


FILE_FIELDS["token_ids"] = RenumberedTokenizer


def _checked_token_ids(token_ids: object, n_vocab: int) -> tuple[int, ...] | None:
    """A numbering as a tuple, or None when it is the identity; ValueError unless it is a
    permutation of range(n_vocab)."""
    if (not isinstance(token_ids, (list, tuple))
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in token_ids)):
        raise ValueError(f"token_ids must be a list of integer ids (public id of each native "
                         f"id), got {str(token_ids)[:60]}")
    if len(token_ids) != n_vocab:
        raise ValueError(f"token_ids has {len(token_ids)} ids but the tokenizer has {n_vocab} "
                         "tokens; it must give every token (bytes, merges, special) one id")
    seen = set(token_ids)
    if len(seen) != n_vocab or min(token_ids, default=0) < 0 or max(token_ids, default=0) >= n_vocab:
        missing = next(i for i in range(n_vocab) if i not in seen)
        raise ValueError(f"token_ids must be a permutation of 0..{n_vocab - 1} (each id exactly "
                         f"once), but id {missing} is missing")
    if all(i == token_id for i, token_id in enumerate(token_ids)):
        return None
    return tuple(token_ids)
