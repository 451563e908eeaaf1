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
from collections.abc import Callable, Iterable, Iterator

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

_PROBE = "Hello, World! 12 x=3.5;\n\tÉté 日本 😀 \x00"
"""Common text that any custom pattern must split without losing a character."""

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
    matches are the chunks. Text between two matches would be lost, so a custom pattern must
    match every character: split() raises a ValueError naming the first character it misses
    (the built-ins match everything by construction, and skip that check).
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
            if self.regex.groups:
                raise ValueError(f"custom split pattern {pattern!r} has a capturing group, so "
                                 "re.findall would return the group, not the chunk; write "
                                 "(?:...) for groups")
            self.split(_PROBE)     # fail now, not hours into training, if it misses common text
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
        chunks = self.regex.findall(text)
        # Matches never overlap, so they cover the text exactly when their lengths add up.
        if self.name == "custom" and sum(map(len, chunks)) != len(text):
            self._raise_uncovered(text)
        return chunks

    def _raise_uncovered(self, text: str) -> None:
        end = 0
        for match in self.regex.finditer(text):
            if match.start() > end:
                break
            end = match.end()
        fixed = self.template + r"|\s+|."        # "." is all but "\n", which \s+ takes
        raise ValueError(f"custom split pattern {self.template!r} does not match "
                         f"{text[end]!r} at index {end} of {text[:40]!r}, so that text would "
                         "be lost; a pattern must match every character: add catch-all "
                         f"alternatives, e.g. {fixed!r}")

    def blocks(self, pieces: Iterable[str], block_chars: int,
               on_no_cut: Callable[[int], None] | None = None) -> Iterator[str]:
        """Re-cut the consecutive `pieces` of one text into blocks that end at safe cuts, so
        split() of each block gives exactly the chunks of the whole text; a block is cut once
        it holds block_chars characters and a safe cut turns up (the last one may be shorter).
        Without a safe cut (one endless word; pattern none or custom) a block keeps growing,
        and `on_no_cut(n_chars)` is called each time it does so past block_chars."""
        pending, searched = "", 0
        for piece in pieces:
            pending += piece
            if len(pending) < block_chars:
                continue
            cut = self.safe_cut(pending, searched)
            if cut:
                head, pending, searched = pending[:cut], pending[cut:], 0
                yield head
                continue
            searched = len(pending) - 1       # no cut up to here: search only new text next
            if on_no_cut is not None:
                on_no_cut(len(pending))
        if pending:
            yield pending

    def safe_cut(self, text: str, start: int = 0) -> int:
        """The last index i > start where `text` may be cut without changing its chunks,
        or 0 if there is none: split(text[:i]) + split(text[i:]) == split(text).

        For gpt2 and gpt4, i is safe where text[i - 1] is a letter and text[i] is not, or
        text[i - 1] is a number and text[i] is not. Why:
        1. A chunk ends at i. The only alternatives that take letters take a run of them
           (contractions too) and end at the first non-letter; numbers are only taken by the
           number alternatives, which end at the first non-number ({L}, {N}, {WS} are
           disjoint). So splitting the whole text ends a chunk at i.
        2. The chunks before i do not change when the text ends at i. No alternative looks
           behind or at anchors, so a match depends on later text only through what it reads
           there; reading past the end can only fail, except for the lookahead of
           `{WS}+(?!...)`, which succeeds at the end of the text. That lookahead is only
           evaluated at i after a whitespace run ending at i - 1, and text[i - 1] is a letter
           or number. (Hence no cut after whitespace: gpt2's `\\s+(?!\\S)` keeps the last
           space of "a  b" apart, but not of the text "a  "; gpt4 also joins "\\n\\n".)
        3. The chunks from i on do not change: matching restarts at i in both cases.
        tests/test_tokenizer_train.py checks it on random text. Text without such a pair
        (one endless word, only punctuation and spaces) has no cut here. For `none` and
        custom patterns nothing is known and the answer is always 0.

        `start` lets a caller that already searched text[:start + 1] look only further on.
        """
        if self.name not in ("gpt2", "gpt4"):
            return 0
        # The last cut is the first match in the reversed text: "<not X><X>" there.
        match = _CUT_REVERSED.search(text[start:][::-1])
        return len(text) - 1 - match.start() if match else 0


_CUT_REVERSED = re.compile(f"[^{_python_ranges(LETTER)}][{_python_ranges(LETTER)}]"
                           f"|[^{_python_ranges(NUMBER)}][{_python_ranges(NUMBER)}]")
"""A safe cut of Splitter.safe_cut, spelled backwards: a non-letter then a letter, or a
non-number then a number, in the reversed text."""
