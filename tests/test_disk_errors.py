"""A full disk, a read-only file system or a folder without permission (issue 18): every
command that writes fails with one line naming the file and the cause, exit code 2, before
work that would be lost where it can, and with earlier outputs byte for byte as they were.

The failures are made in process by `Disk`, which makes the calls that change a folder fail
as the kernel does: creating, renaming or removing anything under it raises EROFS or EACCES
(read-only), or every byte written into a file under it raises ENOSPC (full, from the start or
from a chosen file on). Tests may run as root, whom no chmod stops; without root, EACCES is a
real chmod. One test checks the same lines on a real, tiny tmpfs where this machine lets it be
mounted.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from basegpt.recipe import saved_progress
from basegpt.cli import main
from basegpt.corpus import expand_paths

TINY = ["--n-block", "2", "--n-embed", "32", "--n-head", "2", "--n-k", "16", "--n-v", "16",
        "--n-ff", "64", "--n-context", "16", "--batch-size", "4", "--vocab-size", "270",
        "--eval-tokens", "256", "--device", "cpu", "--quiet",
        # GPT-2's layout, so that `export --format hf` takes the run
        "--norm-position", "pre", "--positional", "learned", "--activation", "gelu",
        "--norm", "layernorm", "--bias"]
CAUSES = {errno.ENOSPC: "no space left on device", errno.EROFS: "read-only file system",
          errno.EACCES: "permission denied"}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


# ------------------------------------------------------------------------ the failing disk

class Disk:
    """Makes the folder `root` fail like a full or read-only file system, for this process.

        disk.read_only(errno.EROFS)     # creating, renaming, removing under root: EROFS
        disk.full()                     # every byte written to a file under root: ENOSPC
        disk.full(after=lambda p: "step_00000004" in p)   # ... from the first such file on

    Errors look like the kernel's: an open, mkdir or rename names its path; a write on a full
    disk names nothing. What does not exist fails as missing, as the kernel checks that first.
    """

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = os.path.abspath(root)
        self.errno: int | None = None           # read-only: the errno of every change
        self.is_full = False
        self.write_errno = errno.ENOSPC         # what a write into a full file system raises
        self.fills_at: Callable[[str], bool] | None = None
        self.fds: set[int] = set()              # files under root open for writing
        self._chmodded: list[tuple[str, int]] = []
        real = {name: getattr(os, name) for name in
                ("open", "mkdir", "replace", "rename", "unlink", "rmdir", "write", "fdopen",
                 "close")}
        real_open = builtins.open

        def changing(name: str) -> Callable:
            def call(path, *args, **kwargs):
                # The kernel looks a path up before it checks the file system: a missing
                # file stays missing (ENOENT), an existing folder exists (EEXIST).
                blocked = self.errno is not None and "dir_fd" not in kwargs \
                    and self._under(path) and os.path.exists(path) == (name != "mkdir")
                if blocked:
                    raise OSError(self.errno, os.strerror(self.errno), os.fspath(path))
                return real[name](path, *args, **kwargs)
            return call

        def os_open(path, flags, *args, **kwargs):
            writing = flags & _WRITE_FLAGS and "dir_fd" not in kwargs and self._under(path)
            if writing and self.errno is not None:
                raise OSError(self.errno, os.strerror(self.errno), os.fspath(path))
            fd = real["open"](path, flags, *args, **kwargs)
            self.fds.discard(fd)
            if writing:
                self._opened(path)
                self.fds.add(fd)
            return fd

        def os_write(fd, data):
            if fd in self.fds and self.is_full and len(data):
                raise OSError(self.write_errno, os.strerror(self.write_errno))
            return real["write"](fd, data)

        def os_close(fd):
            self.fds.discard(fd)
            return real["close"](fd)

        def os_fdopen(fd, *args, **kwargs):
            file = real["fdopen"](fd, *args, **kwargs)
            return _FillingFile(file, self) if fd in self.fds else file

        def open_(file, mode="r", *args, **kwargs):
            writing = isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+") \
                and self._under(file)
            if writing and self.errno is not None:
                raise OSError(self.errno, os.strerror(self.errno), os.fspath(file))
            handle = real_open(file, mode, *args, **kwargs)
            if writing:
                self._opened(file)
                return _FillingFile(handle, self)
            return handle

        for name in ("mkdir", "replace", "rename", "unlink", "rmdir"):
            monkeypatch.setattr(os, name, changing(name))
        monkeypatch.setattr(os, "open", os_open)
        monkeypatch.setattr(os, "write", os_write)
        monkeypatch.setattr(os, "close", os_close)
        monkeypatch.setattr(os, "fdopen", os_fdopen)
        monkeypatch.setattr(builtins, "open", open_)
        monkeypatch.setattr(io, "open", open_)

    def read_only(self, code: int) -> None:
        """Creating, renaming or removing anything under root raises `code` from now on. For
        EACCES, where chmod stops this process, every folder is really made 0o555 instead."""
        if code == errno.EACCES and _chmod_stops_writes():
            for folder, _, _ in os.walk(self.root):
                self._chmodded.append((folder, os.stat(folder).st_mode))
                os.chmod(folder, 0o555)
        else:
            self.errno = code

    def full(self, after: Callable[[str], bool] | None = None, code: int = errno.ENOSPC) -> None:
        """Writes fail from now on, or from the first file created whose path satisfies
        `after`; with `code` (EIO: a disk that is failing rather than full)."""
        self.is_full, self.fills_at, self.write_errno = after is None, after, code

    def restore(self) -> None:
        """Space is back, writes are allowed again."""
        self.errno, self.is_full, self.fills_at = None, False, None
        for folder, mode in reversed(self._chmodded):
            os.chmod(folder, mode)
        self._chmodded.clear()

    def _under(self, path) -> bool:
        path = os.path.abspath(os.fspath(path))
        return path == self.root or path.startswith(self.root + os.sep)

    def _opened(self, path) -> None:
        if self.fills_at is not None and self.fills_at(os.fspath(path)):
            self.is_full = True


class _FillingFile:
    """A file object whose writes fail (ENOSPC) once its Disk is full."""

    def __init__(self, file, disk: Disk) -> None:
        self._file, self._disk = file, disk

    def write(self, data):
        if self._disk.is_full and len(data):
            code = self._disk.write_errno
            raise OSError(code, os.strerror(code))
        return self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()


def _chmod_stops_writes() -> bool:
    """Whether a folder's missing write permission stops this process (not so for root)."""
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o555)
        try:
            Path(folder, "probe").touch()
        except PermissionError:
            return True
        finally:
            os.chmod(folder, 0o755)
        return False


@pytest.fixture
def disk(tmp_path, monkeypatch):
    """A Disk on tmp_path/disk, an empty folder."""
    root = tmp_path / "disk"
    root.mkdir()
    the_disk = Disk(root, monkeypatch)
    yield the_disk
    the_disk.restore()


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file's bytes and every folder (None) under `folder`, hidden ones included."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, f"one line on stderr, got: {err}"
    assert err[0].startswith("basegpt: error: "), err[0]
    return err[0]


# ------------------------------------------------------------------------ a run to write from

class World:
    """Outputs made before the disk fails: a corpus, a 2-step run, its HF export, a cache."""

    def __init__(self, root: Path) -> None:
        import random
        rng = random.Random(0)
        words = "the cat sat on a mat and then ran to the big red house where it slept".split()
        self.text = root / "text.txt"
        self.text.write_text("\n".join(" ".join(rng.choice(words) for _ in range(12))
                                       for _ in range(300)) + "\n", encoding="utf-8")
        self.cache, self.run, self.hf = root / "cache", root / "run", root / "hf"
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("BASEGPT_CACHE", str(self.cache))
            assert main(["train", str(self.text), *TINY, "--max-steps", "2",
                         "--out", str(self.run)]) == 0
        assert main(["export", str(self.run), "--format", "hf", str(self.hf)]) == 0
        self.shards = next((self.cache / "shards").iterdir())


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return World(tmp_path_factory.mktemp("world"))


# Each case puts an earlier output of the command into the failing folder `root` and returns
# (argv, the path its error must name, the cache folder to use).
Case = Callable[[World, Path], tuple[list[str], Path, Path]]


def earlier(path: Path) -> None:
    """Give the file `path`, or each file in the folder `path`, bytes that no command
    writes, so that a file replaced by the failed command shows."""
    for file in [path] if not path.is_dir() else path.rglob("*"):
        if not file.is_dir():
            file.write_text(f"an earlier {file.name}\n")


def train_new_run(w: World, root: Path):
    shutil.copytree(w.run, root / "runs" / "old")
    return (["train", str(w.text), *TINY, "--max-steps", "2", "--out", str(root / "runs" / "new")],
            root / "runs" / "new", w.cache)


def train_resume(w: World, root: Path):
    shutil.copytree(w.run, root / "run")
    return ["train", "--resume", str(root / "run"), "--max-steps", "4", "--quiet"], root / "run", w.cache


def prepare(w: World, root: Path):
    shutil.copytree(w.shards, root / "data")
    earlier(root / "data")
    return (["prepare", str(w.text), "--tokenizer", str(w.run / "tokenizer.json"),
             "--out", str(root / "data"), "--quiet"], root / "data", w.cache)


def tokenizer_train(w: World, root: Path):
    earlier(root / "tok.json")
    return (["tokenizer", "train", str(w.text), "--vocab-size", "270", "--out",
             str(root / "tok.json"), "--quiet"], root / "tok.json", w.cache)


def export_hf(w: World, root: Path):
    shutil.copytree(w.hf, root / "hf")
    earlier(root / "hf")
    return ["export", str(w.run), "--format", "hf", str(root / "hf")], root / "hf", w.cache


def export_tiktoken(w: World, root: Path):
    earlier(root / "tok.tiktoken")
    return (["export", str(w.run), "--format", "tiktoken", str(root / "tok.tiktoken")],
            root / "tok.tiktoken", w.cache)


def import_hf(w: World, root: Path):
    shutil.copytree(w.run, root / "run")
    earlier(root / "run")
    return (["import", "hf", str(w.hf), str(root / "run"), "--overwrite"], root / "run",
            w.cache)


def plot(w: World, root: Path):
    earlier(root / "loss.png")
    return ["plot", str(w.run), "--out", str(root / "loss.png")], root / "loss.png", w.cache


def attention(w: World, root: Path):
    earlier(root / "attn.png")
    return (["attention", str(w.run), "--prompt", "the cat", "--out", str(root / "attn.png")],
            root / "attn.png", w.cache)


def corpus(w: World, root: Path):
    earlier(root / "corpus.txt")
    return (["corpus", "--max-bytes", "20000", "--out", str(root / "corpus.txt")],
            root / "corpus.txt", w.cache)


def cache(w: World, root: Path):
    # Another vocabulary size: a tokenizer to train and cache beside the cached one.
    shutil.copytree(w.cache, root / "cache")
    flags = [*TINY[:TINY.index("--vocab-size")], "--vocab-size", "280",
             *TINY[TINY.index("--vocab-size") + 2:]]
    return (["train", str(w.text), *flags, "--max-steps", "1", "--out",
             str(root.parent / "elsewhere")], root / "cache", root / "cache")


CASES: list[Case] = [train_new_run, train_resume, prepare, tokenizer_train, export_hf,
                     export_tiktoken, import_hf, plot, attention, corpus, cache]


@pytest.mark.parametrize("code", list(CAUSES), ids=errno.errorcode.get)
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.__name__)
def test_a_full_or_read_only_disk_is_one_line_naming_the_path_and_changes_nothing(
        world, disk, case, code, capsys, monkeypatch):
    root = Path(disk.root)
    argv, target, cache_folder = case(world, root)
    monkeypatch.setenv("BASEGPT_CACHE", str(cache_folder))
    before = snapshot(root)
    disk.full() if code == errno.ENOSPC else disk.read_only(code)
    assert main(argv) == 2, "a user error, not a traceback"
    line = one_error_line(capsys)
    assert line.startswith(f"basegpt: error: {target}"), f"names {target}: {line}"
    assert f": {CAUSES[code]}; " in line, line
    assert ".tmp" not in line and ".staging" not in line, f"names a temporary file: {line}"
    if case is cache:
        assert "set BASEGPT_CACHE to" in line, line
        assert not (root.parent / "elsewhere").exists(), "no run started without its tokenizer"
    disk.restore()
    assert snapshot(root) == before, "earlier outputs intact, no file or folder left behind"


# ------------------------------------------------------------------------ failing part-way

def _from_the_nth(n: int, marker: str = "") -> Callable[[str], bool]:
    """A fills_at that fires at the n-th file created (from 1) whose path holds `marker`;
    check_writable's probe does not count."""
    seen = []

    def fires(path: str) -> bool:
        seen.extend([path] if marker in path and ".basegpt-probe." not in path else [])
        return len(seen) >= n
    return fires


@pytest.mark.parametrize("case", [prepare, tokenizer_train, export_hf, export_tiktoken,
                                  import_hf], ids=lambda case: case.__name__)
def test_a_disk_that_fills_after_the_first_file_leaves_earlier_outputs_whole(
        world, disk, case, capsys, monkeypatch):
    root = Path(disk.root)
    argv, target, cache_folder = case(world, root)
    monkeypatch.setenv("BASEGPT_CACHE", str(cache_folder))
    before = snapshot(root)
    disk.full(after=_from_the_nth(2))                 # one file is written, then no space
    if case is tokenizer_train:
        target = target.with_suffix(".vocab")         # tok.json is written, its .vocab fails
    assert main(argv) == 2
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]          # after the log of work done before it
    assert "Traceback" not in err, err
    assert line.startswith(f"basegpt: error: {target}") and ": no space left on device; " \
        in line and ".staging" not in line, line
    disk.restore()
    assert snapshot(root) == before, "the files of a set change together or not at all"


@pytest.mark.parametrize("code", list(CAUSES), ids=errno.errorcode.get)
def test_train_out_that_cannot_be_written_fails_before_any_tokenizing(world, disk, code, capsys,
                                                                      monkeypatch, tmp_path):
    monkeypatch.setenv("BASEGPT_CACHE", str(tmp_path / "fresh-cache"))
    disk.full() if code == errno.ENOSPC else disk.read_only(code)
    out = Path(disk.root) / "run"
    assert main(["train", str(world.text), *TINY, "--max-steps", "1", "--out", str(out)]) == 2
    assert one_error_line(capsys).startswith(f"basegpt: error: {out}: {CAUSES[code]}; ")
    assert not (tmp_path / "fresh-cache").exists(), "no tokenizer trained, no data prepared"


CHECKPOINT_FILES = ["model.safetensors", "tokenizer.json",
                    "checkpoints/step_00000002/model.safetensors",
                    "checkpoints/step_00000002/train_state.json",
                    "checkpoints/step_00000002/train_state.safetensors"]


def test_a_disk_full_at_the_next_checkpoint_keeps_the_last_and_resume_goes_on(world, disk,
                                                                            capsys, monkeypatch):
    monkeypatch.setenv("BASEGPT_CACHE", str(world.cache))
    run = Path(disk.root) / "run"
    shutil.copytree(world.run, run)
    before = {name: (run / name).read_bytes() for name in CHECKPOINT_FILES}
    model_before = json.loads((run / "config.json").read_text())["model"]
    disk.full(after=lambda path: "step_00000004" in path)     # fills up at step 4's save
    assert main(["train", "--resume", str(run), "--max-steps", "4", "--quiet"]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"basegpt: error: {run / 'checkpoints' / 'step_00000004'}") \
        and ": no space left on device; " in line, line
    assert {name: (run / name).read_bytes() for name in CHECKPOINT_FILES} == before, \
        "step 2's checkpoint and the files resume reads are untouched"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000002"], \
        "the cut save left no step folder and no temporary one"
    assert json.loads((run / "config.json").read_text())["model"] == model_before

    disk.restore()                                           # space is back
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert saved_progress(run)["step"] == 4


def test_prepare_failing_part_way_keeps_earlier_shards_and_leaves_no_new_folder(
        world, disk, capsys):
    root = Path(disk.root)
    base = ["prepare", str(world.text), "--tokenizer", str(world.run / "tokenizer.json"),
            "--shard-tokens", "2000", "--quiet"]                   # several shards per split
    assert main([*base, "--out", str(root / "data")]) == 0
    capsys.readouterr()
    assert len(json.loads((root / "data" / "meta.json").read_text())["shards"]["train"]) > 2
    (root / "data" / "train_000000.bin").write_bytes(b"an earlier run's shard")
    before = snapshot(root)

    disk.full(after=_from_the_nth(2, ".shard."))     # the first shard is done, then full
    assert main([*base, "--out", str(root / "data")]) == 2
    assert one_error_line(capsys).startswith(f"basegpt: error: {root / 'data'}/")
    assert snapshot(root) == before, "the earlier shards and meta.json stay together"

    disk.full(after=_from_the_nth(2, ".shard."))
    assert main([*base, "--out", str(root / "new" / "data")]) == 2
    assert ": no space left on device; " in one_error_line(capsys)
    assert snapshot(root) == before, "no folder left behind (new/ neither)"


def test_a_full_cache_while_downloading_is_named_as_such_not_as_a_failed_download(
        world, disk, monkeypatch, capsys, tmp_path):
    import hashlib
    import urllib.request
    from basegpt.data.datasets import DATASETS, NamedDataset
    content = b"to be, or not to be\n" * 50
    monkeypatch.setitem(DATASETS, "tiny", NamedDataset(
        "tiny", "https://example.invalid/tiny.txt", len(content),
        hashlib.sha256(content).hexdigest(), "public domain"))
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(content))
    cache_folder = Path(disk.root) / "cache"
    disk.full()
    assert main(["prepare", "--data", "tiny", "--cache-dir", str(cache_folder), "--tokenizer",
                 str(world.run / "tokenizer.json"), "--out", str(tmp_path / "data")]) == 2
    assert one_error_line(capsys) == (f"basegpt: error: {cache_folder / 'tiny.txt'}: no space "
                                      "left on device; free some space, or choose another path")
    assert not list(cache_folder.iterdir()), "no partial download left"
    assert not (tmp_path / "data").exists()


# ------------------------------------------------------------------------ reading

def test_a_folder_that_cannot_be_listed_is_a_permission_error_not_a_missing_file(
        tmp_path, monkeypatch, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "a.txt").write_text("some text\n")
    if _chmod_stops_writes():
        os.chmod(locked, 0o311)          # may be entered, not listed
    else:
        real_scandir = os.scandir

        def scandir(path="."):
            if os.path.abspath(path) == str(locked):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
            return real_scandir(path)
        monkeypatch.setattr(os, "scandir", scandir)
    try:
        for item in (locked, locked / "*.txt", tmp_path):
            with pytest.raises(PermissionError) as caught:
                expand_paths([item])
            assert caught.value.filename == str(locked), (item, caught.value)
        assert main(["tokenizer", "train", str(locked / "*.txt"), "--out",
                     str(tmp_path / "tok.json"), "--quiet"]) == 2
        assert one_error_line(capsys) == (f"basegpt: error: {locked}: permission denied; "
                                          "check its permissions, or choose another path")
    finally:
        os.chmod(locked, 0o755)


def test_an_io_error_keeps_its_traceback_but_a_full_disk_does_not(disk, capsys):
    # EIO is a failing disk or a basegpt bug, not something another path fixes.
    out = Path(disk.root) / "corpus.txt"
    argv = ["corpus", "--max-bytes", "1000", "--out", str(out)]
    disk.full(code=errno.EIO)
    with pytest.raises(OSError, match="Input/output error"):
        main(argv)
    disk.full(code=errno.ENOSPC)
    assert main(argv) == 2
    assert one_error_line(capsys).startswith(f"basegpt: error: {out}: no space left on device; ")


# ------------------------------------------------------------------------ the real thing

@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A real 64 KiB tmpfs at tmp_path/mnt, where this machine lets a test mount one."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                             capture_output=True).returncode == 0 if shutil.which("mount") \
        else False
    if not mounted:
        pytest.skip("mounting a tmpfs needs root with CAP_SYS_ADMIN; Disk stands in for it")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_real_full_and_read_only_file_system_give_the_same_lines(tiny_tmpfs, capsys):
    (tiny_tmpfs / "fill").write_bytes(b"\0" * 60_000)
    out = tiny_tmpfs / "corpus.txt"
    assert main(["corpus", "--max-bytes", "200000", "--out", str(out)]) == 2
    assert one_error_line(capsys) == (f"basegpt: error: {out}: no space left on device; "
                                      "free some space, or choose another path")
    assert sorted(p.name for p in tiny_tmpfs.iterdir()) == ["fill"], "no temp file left"
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_tmpfs)], check=True)
    assert main(["corpus", "--max-bytes", "1000", "--out", str(out)]) == 2
    assert one_error_line(capsys) == (f"basegpt: error: {out}: read-only file system; "
                                      "choose another path on a writable file system")
