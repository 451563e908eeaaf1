"""Byte-level BPE tokenizer, from scratch (no tokenization library).

    pretokenize.py    split patterns (gpt4, gpt2, none, custom) as explicit Unicode ranges
    bpe_reference.py  the readable trainer: count pairs, merge the most frequent, repeat
    bpe_fast.py       the same merges from unique chunks, incremental counts and a heap
    _bpe.c            the fast trainer's loop and the encoder in C (optional, same results)
    trainer.py        streaming: documents and files -> chunk counts -> merges
    tokenizer.py      Tokenizer: train, encode, decode, special tokens, save, load
"""

from basegpt.tokenizer.pretokenize import BUILTIN_PATTERNS, DEFAULT_PATTERN, Splitter
from basegpt.tokenizer.tokenizer import DEFAULT_SPECIAL_TOKENS, EOT, PAD, Tokenizer

__all__ = ["BUILTIN_PATTERNS", "DEFAULT_PATTERN", "DEFAULT_SPECIAL_TOKENS", "EOT", "PAD",
           "Splitter", "Tokenizer"]
