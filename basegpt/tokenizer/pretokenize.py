"""Pre-splitting: cut text into chunks before BPE, so merges never cross chunk boundaries.

GPT-2 (Radford et al., 2019) found that a pure byte-level BPE wastes vocabulary on variants
like "dog." "dog!" "dog?"; splitting text into words, numbers, punctuation runs and spaces
first, and merging only inside a chunk, fixes that. basegpt ships two such patterns:

    gpt2  's|'t|... | ?letters+ | ?digits+ | ?other+ | spaces
          "Hello, world" -> ["Hello", ",", " world"]
    gpt4  as gpt2, but letters keep one leading non-letter, numbers are cut into groups of at
          most three digits, and line breaks are kept apart from other spaces
          "x = 12345\\n" -> ["x", " =", " ", "123", "45", "\\n"]

and `none`, the original design's pure form: each document is one chunk.

The default is gpt4: on code and prose it gives the most bytes per token of the three at the
same vocabulary size, digit groups keep numbers from eating the vocabulary, and it makes
training fast, because a corpus has far fewer *unique* chunks than chunks.

The patterns are written with three placeholders, {L} (letters, Unicode category L), {N}
(numbers, category N) and {WS} (the White_Space property), filled with explicit code-point
ranges from `_unicode.py`. Python's `re` has no \\p{L}, and its \\s differs from the Rust and
Oniguruma engines of tiktoken and HF tokenizers; explicit ranges make all three engines split
every string identically, which the exported tokenizers rely on. Two departures from the
originals, both chosen so the three engines agree: contractions match ASCII case only ('S but
not the long s U+017F), and the possessive quantifiers of GPT-4's pattern are plain greedy
ones (here they can never give back a character that would let the match continue, so the
chunks are the same).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from basegpt.tokenizer._unicode import LETTER, NUMBER, WHITE_SPACE

GPT2_TEMPLATE = (
    r"'(?:s|t|re|ve|m|ll|d)"
    r"| ?[{L}]+"
    r"| ?[{N}]+"
    r"| ?[^{WS}{L}{N}]+"
    r"|[{WS}]+(?![^{WS}])"
    r"|[{WS}]+"
)

GPT4_TEMPLATE = (
    r"'(?:[sS]|[dD]|[mM]|[tT]|[lL][lL]|[vV][eE]|[rR][eE])"
    r"|[^\r\n{L}{N}]?[{L}]+"
    r"|[{N}]{1,3}"
    r"| ?[^{WS}{L}{N}]+[\r\n]*"
    r"|[{WS}]*[\r\n]"
    r"|[{WS}]+(?![^{WS}])"
    r"|[{WS}]+"
)

BUILTIN_PATTERNS: dict[str, str | None] = {"gpt4": GPT4_TEMPLATE, "gpt2": GPT2_TEMPLATE,
                                           "none": None}
DEFAULT_PATTERN = "gpt4"


def _python_ranges(ranges: Iterable[tuple[int, int]]) -> str:
    def char(cp: int) -> str:
        return f"\\u{cp:04x}" if cp <= 0xFFFF else f"\\U{cp:08x}"
    return "".join(char(a) if a == b else f"{char(a)}-{char(b)}" for a, b in ranges)


def _rust_ranges(ranges: Iterable[tuple[int, int]]) -> str:
    # \x{...} is understood by Rust's regex (tiktoken) and Oniguruma (HF tokenizers).
    return "".join(f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}"
                   for a, b in ranges)


def render(template: str, dialect: str = "python") -> str:
    """Fill a template's {L}, {N}, {WS} placeholders for one regex dialect.

    dialect "python" is for Python's `re`; "rust" for tiktoken and HF tokenizers.
    """
    spell = {"python": _python_ranges, "rust": _rust_ranges}[dialect]
    for name, ranges in (("{L}", LETTER), ("{N}", NUMBER), ("{WS}", WHITE_SPACE)):
        template = template.replace(name, spell(ranges))
    return template


class Splitter:
    """Cuts text into the chunks that BPE merges inside of.

    `pattern` is a built-in name ("gpt4", "gpt2", "none") or a custom Python regex whose
    matches are the chunks (text between matches is dropped, so a custom pattern should match
    everything; decode(encode(s)) == s is checked in the tokenizer's tests for built-ins).
    """

    def __init__(self, pattern: str = DEFAULT_PATTERN) -> None:
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"pattern must be one of {sorted(BUILTIN_PATTERNS)} or a regex, "
                             f"got {pattern!r}")
        self.name = pattern if pattern in BUILTIN_PATTERNS else "custom"
        self.template = BUILTIN_PATTERNS.get(pattern, pattern)
        if self.name == "custom":
            try:
                self.regex: re.Pattern | None = re.compile(pattern)
            except re.error as error:
                raise ValueError(f"custom split pattern {pattern!r} is not a valid Python "
                                 f"regex: {error}") from None
            if self.regex.match("") is not None:
                raise ValueError(f"custom split pattern {pattern!r} matches the empty "
                                 "string; chunks must be at least one character")
        else:
            self.regex = re.compile(render(self.template)) if self.template else None

    @property
    def pattern(self) -> str:
        """What to pass back to Splitter(): the built-in name or the custom regex."""
        return self.name if self.name != "custom" else self.template

    def split(self, text: str) -> list[str]:
        """The chunks of one document: split("Hi there") -> ["Hi", " there"] (gpt4)."""
        if self.regex is None:
            return [text] if text else []
        return self.regex.findall(text)

    def safe_cut(self, text: str) -> int:
        """An index where `text` may be cut without changing its chunks, or 0 if none.

        For gpt2 and gpt4, a letter followed by a space always ends a chunk: every
        alternative that takes a letter stops at the first non-letter, and the next match
        starts afresh at the space (no alternative looks behind). Cutting there gives the
        same chunks as splitting the whole text, so long files can be read block by block.
        (A cut at a line break would not do: gpt2's `\\s+(?!\\S)` gives back the last space
        of a run before a letter, but keeps it at the end of the text.) For `none` and custom
        patterns there is no such guarantee and the answer is always 0.
        """
        if self.name not in ("gpt2", "gpt4"):
            return 0
        i = len(text)
        while (i := text.rfind(" ", 0, i)) > 0:
            if _LETTER.match(text, i - 1):
                return i
        return 0


_LETTER = re.compile(f"[{_python_ranges(LETTER)}]")
