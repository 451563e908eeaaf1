"""Atomic file writes: a crash, Ctrl-C or a full disk mid-save never leaves a half-written file.

Every file basegpt writes goes to a temporary file in the same directory, is flushed and
fsync'ed, and then renamed over the target. A rename within one filesystem is atomic on
POSIX and Windows, so readers see either the old file or the new one, never a mix.

A failed write (no space left, a read-only file system, no permission) raises its OSError
again naming the target, not the temporary file: the user asked for tok.json, not for
.tok.json.3f9c0e21a4b7d855.tmp. A set of files that belong together (a prepared data
folder, an export, a tokenizer and its .vocab) is written into a hidden folder first and
moved into place only when all of it is written (`staged`), so a failure part-way leaves the
old set, never a mix.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (temp file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with errors_name(path):
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
    fsync_dir(path.parent)


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


@contextlib.contextmanager
def errors_name(path: str | os.PathLike) -> Iterator[None]:
    """An OSError raised in the body is raised again naming `path`, with the same errno and
    cause: the file the user asked for rather than the temporary file that failed.

        with errors_name("tok.json"): open_temp(...)   # OSError: [Errno 28] ...: 'tok.json'
    """
    try:
        yield
    except OSError as error:
        if error.errno is None or error.filename == os.fspath(path):
            raise
        # OSError(errno, ...) builds the errno's subclass: EACCES gives a PermissionError.
        raise OSError(error.errno, error.strerror, os.fspath(path)) from error


PROBE_PREFIX = ".basegpt-probe."
"""check_writable's probe files: another process's, gone in a moment, never a leftover."""


def check_writable(path: str | os.PathLike) -> None:
    """Raise now the OSError that writing `path` (a folder to write into, or a file) would
    raise later: a read-only file system, no permission, a disk without a free byte. Call it
    before minutes of work (training a tokenizer, tokenizing a corpus) so that they are not
    lost to the error; the error names `path`.

    `path` need not exist yet; then the nearest folder above it, where it would be made, is
    tried. A probe file is written there and removed; nothing else changes. A file in the
    way above `path` is left to file_in_the_way to report. A disk with a little room left
    passes: how much the work will need is not known here.
    """
    path = Path(path)
    folder = next(p for p in (path, *path.parents, Path(".")) if p.exists())
    if folder == path and not path.is_dir():
        folder = path.parent                 # an existing file, to be replaced
    if not folder.is_dir():
        return
    with errors_name(path):
        fd, probe = open_temp(folder, prefix=PROBE_PREFIX, suffix=".tmp")
        try:
            # Creating an empty file may succeed on a full disk; its first byte does not.
            os.write(fd, b"\0")
        finally:
            os.close(fd)
            # A writer tidying the folder (rundir.clean_leftovers) may have removed it.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(probe)


@contextlib.contextmanager
def new_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Make folder `path` (and missing parents) for the body. If the body raises, the folders
    made here are removed again with all the body wrote into them, so a failed command leaves
    no empty or half-filled folder behind; a folder that was there before stays.

        with new_folder("data/books") as out: ...    # fails: no data/books (nor data/, if new)
    """
    path = Path(path)
    made = next((p for p in reversed((path, *path.parents)) if not p.exists()), None)
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        raise


@contextlib.contextmanager
def staged(folder: str | os.PathLike, commit_record: str | None = None) -> Iterator[Path]:
    """A hidden folder inside `folder` to write a set of files into, moved into `folder` as
    a whole: when the body succeeds each file is renamed over its namesake there (renames
    need no free space), when it raises they are deleted and `folder` is as it was.

        with staged(run_dir, commit_record="config.json") as stage:
            save_tensors(stage / "model.safetensors", ...)
            atomic_write_text(stage / "config.json", ...)

    `commit_record` names the file that says the set is complete (config.json, meta.json):
    the old one is deleted before anything moves and the new one moved in last, so a reader
    that finds it also finds the files it describes. The body writes files only, no folders.
    """
    folder = Path(folder)
    stage = folder / f".staging.{secrets.token_hex(8)}"
    with errors_name(folder):
        stage.mkdir()
    try:
        try:
            yield stage
        except OSError as error:
            # Name the file the user will look for, not its stand-in in the hidden folder.
            inside = error.filename and Path(error.filename).is_relative_to(stage)
            if error.errno is None or not inside:
                raise
            target = folder / Path(error.filename).relative_to(stage)
            raise OSError(error.errno, error.strerror, os.fspath(target)) from error
        names = sorted(p.name for p in stage.iterdir())
        if commit_record in names:
            names.remove(commit_record)
            names.append(commit_record)
            (folder / commit_record).unlink(missing_ok=True)
        for name in names:
            os.replace(stage / name, folder / name)
        fsync_dir(folder)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make the renames and removals done in `directory` durable (a no-op on Windows, where
    directories cannot be opened this way)."""
    if os.name == "nt":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except PermissionError:
        # A folder one may write but not list (mode -wx): the file is in place already, and
        # only its durability after a power cut is left to the file system.
        return
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
