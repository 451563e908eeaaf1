"""Atomic file writes: a crash or Ctrl-C mid-save never leaves a half-written file.

Every file basegpt writes goes to a temporary file in the same directory, is flushed and
fsync'ed, and then renamed over the target. A rename within one filesystem is atomic on
POSIX and Windows, so readers see either the old file or the new one, never a mix.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (temp file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = open_temp(path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Ctrl-C included: remove the partial temp file and leave the old target untouched.
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` as UTF-8 to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def open_temp(directory: str | os.PathLike, prefix: str, suffix: str) -> tuple[int, str]:
    """Create a new, empty file with a random name in `directory`; return (fd, path).

    Like tempfile.mkstemp, but the file gets the mode of any normally created file,
    0o666 & ~umask (e.g. 0o644), not mkstemp's owner-only 0o600: it is about to be renamed
    into a user's file (shards, meta.json, checkpoints), which others may need to read.
    The kernel applies the umask (and a folder's default ACL) itself, so nothing here reads
    or changes the process-wide umask.
    """
    path = os.path.join(directory, f"{prefix}{secrets.token_hex(8)}{suffix}")
    # O_EXCL never opens an existing file; with 64 random bits a clash is practically impossible.
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    return os.open(path, flags, 0o666), path


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; directories cannot be opened this way on Windows.
    if os.name == "nt":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_in_the_way(path: str | os.PathLike) -> Path | None:
    """The existing file, at `path` or a folder above it, that stops a folder being made at
    `path`; None when one can be. Callers check it before any work and name it in their error.

        file_in_the_way("notes.txt/out") -> Path("notes.txt")   (if notes.txt is a file)
    """
    path = Path(path)
    for above in (path, *path.parents):
        if above.exists():
            return None if above.is_dir() else above
    return None



def fsync_dir(directory: str | os.PathLike) -> None:
    """Make the renames and removals done in `directory` durable (a no-op on Windows)."""
    _fsync_dir(Path(directory))
