"""One writer per run directory: an exclusive lock, with the holder named in it.

Two processes writing one run directory mix it up: one run's config.json beside the other's
weights, metrics records out of order, a resume reading a checkpoint that is being replaced.
So every writer (train, resume, overwrite, import, export) holds RUN/run.lock while it
writes, and a second writer is refused with an error that names the holder:

    RUN is in use by another basegpt process: pid 4242 on host lab, since
    2026-12-06T10:01:02+0000 (basegpt train --out RUN); wait for it to end, stop it
    (kill 4242), or choose another --out

The lock is the kernel's: flock() on the open file. The kernel drops it when its process
ends in any way, kill -9 included, so a crashed run never blocks the next one and a pid that
the system has since given to another program is never mistaken for the holder. The file
itself only carries the holder's description (JSON: pid, host, start time, command) for the
message; it may outlive its holder, and the next writer takes it over, saying who held it.

Where flock is not available (no fcntl module, or a filesystem that refuses it), the file's
existence is the lock (created with O_EXCL), and a file left by a dead process on this host
is detected as stale (its pid no longer runs) and taken over; a holder on another host
cannot be checked from here, so the error says to remove the file by hand once that process
is gone.

Readers (generate, eval, info, plot) take no lock: every file a writer replaces is replaced
atomically (_io.py), so a reader sees the old file or the new one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:                 # not POSIX: the O_EXCL file below is the lock
    fcntl = None                    # type: ignore[assignment]

LOCK_FILE = "run.lock"
DESCRIPTION_WAIT = 1.0   # seconds: far more than a holder takes to write its few bytes

# flock on a filesystem that cannot lock (some network mounts) fails with one of these.
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class RunLocked(ValueError):
    """Another process holds the run directory's lock (a user error: exit code 2)."""


@dataclass
class RunLock:
    """A held lock on `run_dir` (see run_lock). `previous` is the description left by an
    earlier holder that ended without releasing it (killed or crashed), else None."""

    run_dir: Path
    previous: dict[str, Any] | None = None
    _fd: int | None = field(default=None, repr=False)
    _made_dir: bool = field(default=False, repr=False)
    _depth: int = field(default=1, repr=False)


_held: dict[str, RunLock] = {}
"""The locks this process holds, by resolved path: a writer inside a writer (train_run's
lock around fit's) shares the lock instead of refusing itself."""


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike, purpose: str | None = None) -> Iterator[RunLock]:
    """Hold `run_dir`'s lock for the `with` block (the folder is made if missing).

    `purpose` goes into the lock file for another process's error message (default: this
    process's command line). Raises RunLocked, naming the holder, when another process
    holds it. Re-entrant within a process. On exit the lock file is removed, and a folder
    that this lock made and that is still empty is removed too, so a writer that failed
    before writing anything leaves nothing behind.
    """
    run_dir = Path(run_dir)
    key = str(run_dir.resolve())
    if key in _held:
        _held[key]._depth += 1
        try:
            yield _held[key]
        finally:
            _held[key]._depth -= 1
        return
    lock = _acquire(run_dir, purpose or " ".join(sys.argv))
    _held[key] = lock
    try:
        yield lock
    finally:
        del _held[key]
        _release(lock)


def _describe(purpose: str) -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": purpose}


def _acquire(run_dir: Path, purpose: str) -> RunLock:
    made = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    try:
        lock = _acquire_flock(path, run_dir) if fcntl is not None else None
        if lock is None:
            lock = _acquire_exclusive(path, run_dir)
    except BaseException:
        if made:
            _remove_if_empty(run_dir)
        raise
    lock._made_dir = made
    _write_description(lock._fd, _describe(purpose))
    return lock


def _acquire_flock(path: Path, run_dir: Path) -> RunLock | None:
    """The kernel lock on `path`; None where the filesystem cannot flock."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holders_description(fd)
            os.close(fd)
            raise RunLocked(_in_use(run_dir, holder)) from None
        except OSError as error:
            os.close(fd)
            if error.errno in _NO_FLOCK:
                return None
            raise
        # The holder we waited on may have removed the file between our open and our flock:
        # then we hold a lock on a file no one else will open. Start again on the path's file.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            previous = _read_description(fd)
            return RunLock(run_dir, previous=previous or None, _fd=fd)
        os.close(fd)


def _acquire_exclusive(path: Path, run_dir: Path) -> RunLock:
    """The lock as a file made with O_EXCL; a stale one (dead pid on this host) is removed."""
    previous = None
    for _ in range(2):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            return RunLock(run_dir, previous=previous, _fd=fd)
        except FileExistsError:
            try:
                holder = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                holder = {}
            if not _is_stale(holder):
                raise RunLocked(_in_use(run_dir, holder, by_hand=True)) from None
            previous = holder
            path.unlink(missing_ok=True)
    raise RunLocked(_in_use(run_dir, {}, by_hand=True))


def _is_stale(holder: dict[str, Any]) -> bool:
    """A description left by a process of this host that no longer runs."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:          # it runs, as another user
        return False
    return False


def _release(lock: RunLock) -> None:
    # Removed while still held, so a process that opens the path after this sees a new file
    # (the samestat check above), never this one.
    with contextlib.suppress(OSError):
        (lock.run_dir / LOCK_FILE).unlink()
    if lock._fd is not None:
        os.close(lock._fd)
    if lock._made_dir:
        _remove_if_empty(lock.run_dir)


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()


def _write_description(fd: int, description: dict[str, Any]) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(description) + "\n").encode("utf-8"), 0)


def _holders_description(fd: int) -> dict[str, Any]:
    """The description in a lock file that another process holds. The holder writes it just
    after taking the lock, so a writer that comes in between finds the file still empty:
    give the holder a moment (DESCRIPTION_WAIT) rather than report it unnamed."""
    deadline = time.monotonic() + DESCRIPTION_WAIT
    while not (holder := _read_description(fd)) and time.monotonic() < deadline:
        time.sleep(0.01)
    return holder


def _read_description(fd: int) -> dict[str, Any]:
    try:
        data = os.pread(fd, 1 << 16, 0)
        description = json.loads(data.decode("utf-8")) if data.strip() else {}
    except (OSError, ValueError):
        return {}
    return description if isinstance(description, dict) else {}


def _in_use(run_dir: Path, holder: dict[str, Any], by_hand: bool = False) -> str:
    """The error for a lock another process holds, naming it and what to do."""
    if not holder:
        # Just created, its description not written yet, or unreadable.
        return (f"{run_dir} is in use by another basegpt process (see {run_dir / LOCK_FILE}); "
                "wait for it to end, or choose another directory")
    pid, host = holder.get("pid"), holder.get("host")
    who = f"pid {pid} on host {host}, since {holder.get('started')}"
    if holder.get("command"):
        who += f" ({holder['command']})"
    here = host == socket.gethostname()
    stop = f"stop it (kill {pid})" if here else f"stop it on {host}"
    hand = (f"; if that process is gone, remove {run_dir / LOCK_FILE}"
            if by_hand and not here else "")
    return (f"{run_dir} is in use by another basegpt process: {who}; wait for it to end, "
            f"{stop}, or choose another directory{hand}")
