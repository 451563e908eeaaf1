"""Where text comes from: the built-in corpus, files, folders and glob patterns.

The built-in corpus is text that every Python installation already has: the `.py` sources of
the running interpreter's standard library. It lets the main job run offline with nothing to
download. Files are taken in sorted path order, test directories and site-packages left out,
so the corpus is the same bytes on every machine with the same Python version; a byte budget
caps it, cutting the last file at a line boundary.

Each source yields *documents* (one per file): the tokenizer never merges across two of them,
and the data pipeline separates them with the end-of-text token.

Text is UTF-8. `text_files` is `expand_paths` for training: what a folder or a glob finds
that is not UTF-8 text (an image, a PDF, a file in Latin-1) is left out with a warning that
names it, so one stray file does not stop a run; a file named on its own is always read, and
then fails with a message naming the file, the byte and (only where the bytes look like text
in a one-byte encoding) the `iconv` command that converts it.
"""

from __future__ import annotations

import codecs
import glob
import os
import sysconfig
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

# Directories of the standard library that hold tests or third-party packages, not library code.
_SKIPPED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages",
                           "__pycache__"})

DEFAULT_BUILTIN_BYTES = 10_000_000
"""Default byte budget of the built-in corpus: about 10 MB, most of a CPython 3.11 stdlib."""


def stdlib_root() -> Path:
    """The directory holding the running interpreter's standard library sources."""
    return Path(sysconfig.get_paths()["stdlib"])


def builtin_corpus_files(root: str | os.PathLike | None = None) -> list[Path]:
    """The built-in corpus's files: every `.py` under the stdlib, sorted, tests excluded."""
    root = Path(root) if root is not None else stdlib_root()
    if not root.is_dir():
        raise FileNotFoundError(f"standard library directory {root} does not exist; "
                                "the built-in corpus needs the interpreter's .py sources")
    files: list[Path] = []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d not in _SKIPPED_DIRS)
        files.extend(Path(directory, n) for n in sorted(names) if n.endswith(".py"))
    # os.walk visits directories depth first; sort whole paths so the order is plain path order.
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def builtin_corpus(max_bytes: int | None = DEFAULT_BUILTIN_BYTES,
                   root: str | os.PathLike | None = None, skip_bytes: int = 0) -> Iterator[str]:
    """Yield the built-in corpus one document (one stdlib file) at a time.

    The documents together hold at most `max_bytes` bytes of UTF-8 (None = no cap); the last
    document is cut at the last line end that fits. `skip_bytes` leaves out every file that
    starts within the first `skip_bytes` bytes, so `builtin_corpus(skip_bytes=N)` is text held
    out from `builtin_corpus(N)`. Files are decoded as UTF-8 with invalid bytes replaced,
    which keeps the corpus deterministic even if a file is not valid UTF-8.
    """
    if max_bytes is not None and max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive or None, got {max_bytes}")
    remaining = max_bytes
    offset = 0
    for path in builtin_corpus_files(root):
        data = path.read_bytes()
        offset += len(data)
        if offset - len(data) < skip_bytes:
            continue
        if remaining is not None and len(data) > remaining:
            cut = data.rfind(b"\n", 0, remaining) + 1     # 0 when no line end fits
            if cut:
                yield data[:cut].decode("utf-8", errors="replace")
            return
        if data:
            yield data.decode("utf-8", errors="replace")
        if remaining is not None:
            remaining -= len(data)
            if remaining == 0:
                return


def expand_paths(inputs: Iterable[str | os.PathLike],
                 exclude: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """Turn files, folders (searched recursively) and glob patterns into a sorted file list.

    A folder gives its files except hidden ones (a name starting with "."), and except those
    inside hidden folders (.git, .venv, ...) -- as glob patterns already do. Folders and
    globs also skip everything under the folders in `exclude`: `prepare` excludes its output
    folder, so `prepare books --out books/shards` does not read its own shards on a re-run.
    A file named explicitly is always taken. Raises FileNotFoundError naming the first input
    that matches no file, and PermissionError naming a folder that may not be listed (rather
    than skipping it, or calling its files missing).
    """
    return [path for path, _ in _expand(inputs, exclude)]


def text_files(inputs: Iterable[str | os.PathLike],
               exclude: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """`expand_paths`, less the files found by a folder or a glob that are not UTF-8 text.

    Each file left out gets a warning naming it and why: a binary file (it holds a NUL byte,
    which no text has), or bytes that are not UTF-8, with the command that converts them when
    they look like Latin-1 or Windows-1252 text. A file named on its own is kept either way
    (reading it fails with that message). Every file found is read once to check it. Raises
    ValueError when no text is left. (Python shows a warning once per message, so a folder
    read twice, for the tokenizer and then for the shards, names each such file once.)
    """
    inputs = list(inputs)
    kept, left_out = [], []
    for path, named in _expand(inputs, exclude):
        problem = None if named else not_text(path)
        if problem is None:
            kept.append(path)
        else:
            left_out.append(path)
            warnings.warn(f"skipped {path}: {problem}", stacklevel=2)
    if not kept:
        raise ValueError(f"no UTF-8 text in {', '.join(map(str, inputs))}: all "
                         f"{len(left_out)} file(s) found were skipped (see the warnings "
                         "above); give text files")
    return kept


def _expand(inputs: Iterable[str | os.PathLike],
            exclude: Iterable[str | os.PathLike]) -> list[tuple[Path, bool]]:
    """expand_paths' work: (file, whether it was named on its own) in order."""
    excluded = [Path(p).resolve() for p in exclude]

    def wanted(path: Path) -> bool:
        return path.is_file() and not any(path.resolve().is_relative_to(e) for e in excluded)

    files: list[tuple[Path, bool]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = []
            for directory, subdirs, names in os.walk(path, onerror=_raise):
                # Pruned, not filtered afterwards: .git or .venv may hold many thousand files.
                subdirs[:] = [d for d in subdirs if not d.startswith(".")
                              and Path(directory, d).resolve() not in excluded]
                found.extend(Path(directory, n) for n in names if not n.startswith("."))
            found = sorted(p for p in found if wanted(p))
        elif path.is_file():
            found = [path]
        else:
            found = sorted(Path(p) for p in glob.glob(str(item), recursive=True)
                           if wanted(Path(p)))
        if not found and path.is_dir():
            skipped = "hidden files and the output folder" if excluded else "hidden files"
            raise FileNotFoundError(f"{item}: the folder holds no files to read ({skipped} "
                                    "are skipped); give a folder of text files")
        if not found:
            _check_listable(item)       # glob skips a folder it may not read, silently
            raise FileNotFoundError(f"{item}: no such file, folder or glob match; "
                                    "check the path (folders are read recursively)")
        files.extend((f, path.is_file()) for f in found)
    return files


def _raise(error: OSError) -> None:
    raise error


def _check_listable(pattern: str | os.PathLike) -> None:
    """Raise the PermissionError of listing the folder a glob pattern starts in, if any:
    `docs/*.txt` in an unreadable docs/ matches nothing, but the files are not missing."""
    parts = Path(pattern).parts
    magic = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), None)
    if magic is None:
        return
    base = Path(*parts[:magic]) if magic else Path(".")
    if base.is_dir():
        with os.scandir(base):
            pass


def read_text_file(path: str | os.PathLike) -> str:
    """Read a UTF-8 text file, with an error naming the file if it is not UTF-8."""
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"{path} is a directory, not a file; give the path of a text "
                                "file in it")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is {not_utf8(path, data, error.start, error.reason)}") from None


def read_text_pieces(path: str | os.PathLike, block_bytes: int = 1 << 20) -> Iterator[str]:
    """The text of a UTF-8 file, `block_bytes` bytes at a time (a character cut by a block's
    end comes whole with the next piece). Bytes that are not UTF-8 are a ValueError naming
    the file and the byte (see not_utf8), found when their block is read."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a text file")
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    offset = 0
    with open(path, "rb") as f:
        while raw := f.read(block_bytes):
            try:
                text = decoder.decode(raw)
            except UnicodeDecodeError as error:
                raise ValueError(f"{path} is "
                                 f"{not_utf8(path, raw, offset + error.start, error.reason)}"
                                 ) from None
            offset += len(raw)
            yield text
    buffered = len(decoder.getstate()[0])          # bytes of an unfinished character
    if buffered:
        cut = not_utf8(path, b"", offset - buffered, "the file ends inside a character")
        raise ValueError(f"{path} is {cut}")


# ------------------------------------------------------------------------ is it text?

_READ_BYTES = 1 << 20
_CONTROL = bytes(sorted(set(range(0x20)) - set(b"\t\n\f\r"))) + b"\x7f"
"""Bytes that plain text does not hold, in any of the encodings below."""
_C1 = bytes(range(0x80, 0xA0))
"""Control codes in Latin-1, but printable in Windows-1252 (curly quotes, the euro sign)..."""
_CP1252_UNDEFINED = b"\x81\x8d\x8f\x90\x9d"
"""... except these five, which Windows-1252 leaves undefined."""
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def not_text(path: str | os.PathLike) -> str | None:
    """Why the file at `path` is not UTF-8 text, or None if it is: "a binary file (a NUL
    byte at byte N)", "UTF-16 text: convert it ...", or not_utf8's words. Reads the whole
    file, a block at a time."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    offset = 0
    with open(path, "rb") as f:
        while block := f.read(_READ_BYTES):
            if offset == 0 and block.startswith(_UTF16_BOMS):
                return (f"UTF-16 text, not UTF-8: convert it first, e.g. iconv -f utf-16 -t "
                        f"utf-8 {path} > {_converted(path)}")
            nul = block.find(b"\0")
            if nul >= 0:            # valid UTF-8, but no text holds one
                return f"a binary file (a NUL byte at byte {offset + nul})"
            try:
                decoder.decode(block)
            except UnicodeDecodeError as error:
                return not_utf8(path, block, offset + error.start, error.reason)
            offset += len(block)
    buffered = len(decoder.getstate()[0])
    return (not_utf8(path, b"", offset - buffered, "the file ends inside a character")
            if buffered else None)


def not_utf8(path: str | os.PathLike, data: bytes, at: int, reason: str) -> str:
    """What is wrong with a file that is not UTF-8, and (where its bytes `data`, all or a
    part, look like text in a one-byte encoding) the iconv command that converts it:

        not_utf8("a.txt", "café".encode("latin1"), 3, "invalid continuation byte")
        -> "not valid UTF-8 (byte 3: invalid continuation byte); it looks like Latin-1 text:
            convert it first, e.g. iconv -f latin1 -t utf-8 a.txt > a.utf8.txt"

    Other bytes (a binary file, an unknown encoding) get no such advice: "not valid UTF-8 (byte 3:
    ...); basegpt reads UTF-8 text".
    """
    where = f"not valid UTF-8 (byte {at}: {reason})"
    encoding = _one_byte_encoding(data)
    if encoding is None:
        return f"{where}; basegpt reads UTF-8 text"
    name, iconv = encoding
    return (f"{where}; it looks like {name} text: convert it first, e.g. iconv -f {iconv} "
            f"-t utf-8 {path} > {_converted(path)}")


def _converted(path: str | os.PathLike) -> Path:
    """Where the suggested conversion of `path` goes: notes.txt -> notes.utf8.txt."""
    return Path(path).with_suffix(".utf8" + Path(path).suffix)


def _one_byte_encoding(data: bytes) -> tuple[str, str] | None:
    """(name, iconv's name) of the one-byte encoding that `data` looks like text in, if
    any: no control bytes, and every byte above 0x7f printable in Latin-1 (or else in
    Windows-1252). A binary file (an image, a zip) has control bytes all over."""
    if not data or data.translate(None, delete=_CONTROL) != data:
        return None
    if data.translate(None, delete=_C1) == data:
        return "Latin-1", "latin1"
    if data.translate(None, delete=_CP1252_UNDEFINED) == data:
        return "Windows-1252", "cp1252"
    return None
