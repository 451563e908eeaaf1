"""Where text comes from: the built-in corpus, files, folders and glob patterns.

The built-in corpus is text that every Python installation already has: the `.py` sources of
the running interpreter's standard library. It lets the main job run offline with nothing to
download. Files are taken in sorted path order, test directories and site-packages left out,
so the corpus is the same bytes on every machine with the same Python version; a byte budget
caps it, cutting the last file at a line boundary.

Each source yields *documents* (one per file): the tokenizer never merges across two of them,
and the data pipeline separates them with the end-of-text token.
"""

from __future__ import annotations

import glob
import os
import sysconfig
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
    excluded = [Path(p).resolve() for p in exclude]

    def wanted(path: Path) -> bool:
        return path.is_file() and not any(path.resolve().is_relative_to(e) for e in excluded)

    files: list[Path] = []
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
        files.extend(found)
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
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not valid UTF-8 (byte {error.start}: {error.reason}); "
                         "convert it first, e.g. iconv -f latin1 -t utf-8") from None
