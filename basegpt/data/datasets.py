"""Named datasets: a one-table registry, and a verified, cached, atomic download.

    basegpt prepare --data shakespeare --tokenizer tok.json --out data/shakespeare

A named dataset is one row of DATASETS: where it comes from, its exact size and sha256, and
its licence. Adding one is a one-line change. `fetch_dataset` downloads a file once into the
user cache directory, checks its sha256 before it gets its final name (written atomically:
download to a temporary file, verify, rename), and afterwards finds it there without
touching the network. A cached file whose sha256 no longer matches is downloaded again.

The cache directory is $BASEGPT_CACHE, else $XDG_CACHE_HOME/basegpt, else ~/.cache/basegpt.
Offline, copy the file by hand to the path the error message names (also
`dataset_path(name)`); it is then used as if it had been downloaded.

`stdlib` is the built-in corpus (the running Python's standard library sources, see
`basegpt.corpus`): nothing to download, and the default everywhere.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from basegpt._io import errors_name, fsync_dir, open_temp


@dataclass(frozen=True)
class NamedDataset:
    """One row of the registry. url None means built in (nothing to download)."""
    name: str
    url: str | None
    size: int | None            # bytes
    sha256: str | None
    license: str
    description: str = ""

    @property
    def filename(self) -> str:
        return f"{self.name}.txt"


DATASETS: dict[str, NamedDataset] = {d.name: d for d in [
    NamedDataset("stdlib", None, None, None, "PSF-2.0 (the Python sources it is read from)",
                 "the running Python's standard library .py sources (built in, the default)"),
    NamedDataset("shakespeare",
                 "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
                 "tinyshakespeare/input.txt",
                 1_115_394, "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
                 "public domain", "tinyshakespeare: 40,000 lines of Shakespeare (char-rnn)"),
]}
DEFAULT_DATASET = "stdlib"
_READ_BYTES = 1 << 20


class DownloadError(ValueError, OSError):
    """A named dataset could not be downloaded or verified. It is both a ValueError (bad
    input the user can fix, which the CLI reports in one line) and an OSError (I/O)."""


def cache_dir() -> Path:
    """$BASEGPT_CACHE, else $XDG_CACHE_HOME/basegpt, else ~/.cache/basegpt."""
    if os.environ.get("BASEGPT_CACHE"):
        return Path(os.environ["BASEGPT_CACHE"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "basegpt"
    return Path.home() / ".cache" / "basegpt"


def get_dataset(name: str) -> NamedDataset:
    """The registry row called `name`, or a ValueError listing the names there are."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def dataset_path(name: str, cache: str | os.PathLike | None = None) -> Path:
    """Where the file of dataset `name` lives (or will, once fetched)."""
    return Path(cache if cache is not None else cache_dir()) / get_dataset(name).filename


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(_READ_BYTES):
            digest.update(piece)
    return digest.hexdigest()


def fetch_dataset(name: str, cache: str | os.PathLike | None = None,
                  timeout: float = 30.0) -> Path:
    """The verified local file of dataset `name`, downloading it on first use.

    Returns the cached file at once when its sha256 matches the registry. Otherwise (absent
    or corrupt) downloads `url` to a temporary file beside it, checks size and sha256, and
    renames it into place; a failed check leaves no file behind. Raises DownloadError with
    the path to put the file at by hand when the download fails.
    """
    dataset = get_dataset(name)
    if dataset.url is None:
        raise ValueError(f"dataset {name!r} is built in and has no file to fetch; use it "
                         f"through prepare(data={name!r})")
    path = dataset_path(name, cache)
    if path.is_file() and sha256_file(path) == dataset.sha256:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # Errors of the cache's disk name `path`; only the network's are download errors.
    with errors_name(path):
        fd, tmp = open_temp(path.parent, prefix=f".{path.name}.", suffix=".download")
    try:
        digest, size = hashlib.sha256(), 0
        with errors_name(path), os.fdopen(fd, "wb") as f:
            for piece in _download(name, dataset.url, timeout, path):
                digest.update(piece)
                size += len(piece)
                f.write(piece)
            f.flush()
            os.fsync(f.fileno())
        if digest.hexdigest() != dataset.sha256 or size != (dataset.size or size):
            raise DownloadError(
                f"dataset {name!r} from {dataset.url} failed verification: got {size:,} bytes "
                f"with sha256 {digest.hexdigest()}, expected {dataset.size or '?'} bytes with "
                f"sha256 {dataset.sha256}; the server sent a different file. Nothing was "
                f"saved; retry later or put the right file at {path}")
        with errors_name(path):
            os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _download(name: str, url: str, timeout: float, path: Path) -> Iterator[bytes]:
    """The bytes at `url` in 1 MiB pieces; a network error is a DownloadError saying where
    to put the file by hand. (Errors writing the pieces are the caller's, not raised here.)"""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            while piece := response.read(_READ_BYTES):
                yield piece
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(
            f"could not download dataset {name!r} from {url} ({reason}); without network, "
            f"copy the file by hand to {path} (sha256 {get_dataset(name).sha256})") from None
