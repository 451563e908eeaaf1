"""Named datasets: download, cache, verification and the offline error, against a local HTTP
server on 127.0.0.1 (never the internet); and `basegpt prepare` through the real entry point."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import socket
import stat
import threading
from pathlib import Path

import pytest

from basegpt import Tokenizer
from basegpt.cli import main
from basegpt.data import DATASETS, DownloadError, NamedDataset, cache_dir, dataset_path, \
    fetch_dataset, open_shard
from basegpt.data import datasets as datasets_module

CONTENT = "To be, or not to be, that is the question:\n" * 20
SHA = hashlib.sha256(CONTENT.encode()).hexdigest()
SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"


@pytest.fixture
def server(tmp_path):
    """Serve tmp_path/www on an ephemeral port; yields (base url, list of requested paths)."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "tiny.txt").write_text(CONTENT)
    hits: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

        def log_message(self, *args):     # keep the test output clean
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def tiny(server, monkeypatch):
    """Register a dataset 'tiny' served by the local server."""
    url, hits = server
    monkeypatch.setitem(DATASETS, "tiny", NamedDataset("tiny", f"{url}/tiny.txt",
                                                       len(CONTENT), SHA, "test"))
    return hits


def test_registry_rows():
    shakespeare = DATASETS["shakespeare"]
    assert (shakespeare.size, shakespeare.sha256) == (
        1_115_394, "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed")
    assert shakespeare.url.startswith("https://raw.githubusercontent.com/karpathy/char-rnn/")
    assert DATASETS["stdlib"].url is None, "the built-in corpus downloads nothing"


def test_cache_dir_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("BASEGPT_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "a", "$BASEGPT_CACHE first"
    monkeypatch.delenv("BASEGPT_CACHE")
    assert cache_dir() == tmp_path / "x" / "basegpt", "then $XDG_CACHE_HOME/basegpt"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert cache_dir() == tmp_path / "h" / ".cache" / "basegpt", "then ~/.cache/basegpt"


def test_download_once_then_cache_hit(tiny, tmp_path):
    cache = tmp_path / "cache"
    path = fetch_dataset("tiny", cache)
    assert path == cache / "tiny.txt" and path.read_text() == CONTENT, "downloaded"
    assert fetch_dataset("tiny", cache) == path
    assert tiny == ["/tiny.txt"], "the second call is served from the cache"
    assert [p.name for p in cache.iterdir()] == ["tiny.txt"], "no temporary files left"


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
def test_download_gets_the_mode_the_umask_gives(tiny, tmp_path):
    old = os.umask(0o027)
    try:
        path = fetch_dataset("tiny", tmp_path / "cache")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640, \
        f"mode {oct(stat.S_IMODE(path.stat().st_mode))}: 0o666 & ~umask, not owner-only"


def test_corrupt_cache_is_downloaded_again(tiny, tmp_path):
    cache = tmp_path / "cache"
    fetch_dataset("tiny", cache).write_text("garbage")
    assert fetch_dataset("tiny", cache).read_text() == CONTENT, "repaired"
    assert len(tiny) == 2, "a bad sha256 in the cache triggers a new download"


def test_wrong_file_from_server_leaves_nothing(tiny, tmp_path, monkeypatch):
    monkeypatch.setitem(DATASETS, "tiny", NamedDataset("tiny", DATASETS["tiny"].url,
                                                       len(CONTENT), "0" * 64, "test"))
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match=f"sha256 {SHA}, expected .* sha256 0000"):
        fetch_dataset("tiny", cache)
    assert list(cache.iterdir()) == [], "no file saved after a failed verification"


def test_no_network_says_where_to_put_the_file(monkeypatch, tmp_path):
    with socket.socket() as s:                       # a port on which nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setitem(DATASETS, "tiny", NamedDataset("tiny", f"http://127.0.0.1:{port}/x",
                                                       len(CONTENT), SHA, "test"))
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError) as error:
        fetch_dataset("tiny", cache, timeout=5)
    assert f"copy the file by hand to {cache / 'tiny.txt'}" in str(error.value), str(error.value)
    assert isinstance(error.value, OSError) and isinstance(error.value, ValueError)
    assert list(cache.iterdir()) == [], "no partial file"
    (cache / "tiny.txt").write_text(CONTENT)          # ... put there by hand: now it works
    assert fetch_dataset("tiny", cache).read_text() == CONTENT


def test_unknown_and_builtin_names(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'nope'; choose one of: shakespeare"):
        fetch_dataset("nope", tmp_path)
    with pytest.raises(ValueError, match="built in"):
        fetch_dataset("stdlib", tmp_path)


@pytest.mark.skipif(not SHAKESPEARE.is_file(), reason=f"{SHAKESPEARE} not present")
def test_shakespeare_placed_by_hand_works_offline(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("must not touch the network")
    monkeypatch.setattr(datasets_module.urllib.request, "urlopen", no_network)
    shutil.copy(SHAKESPEARE, dataset_path("shakespeare", tmp_path))
    assert fetch_dataset("shakespeare", tmp_path).stat().st_size == 1_115_394


# ------------------------------------------------------------------------ CLI

@pytest.fixture
def tok_path(tmp_path) -> Path:
    path = tmp_path / "tok.json"
    Tokenizer(vocab_size=258).save(path)
    return path


def test_cli_prepare_files(tmp_path, tok_path, capsys):
    (tmp_path / "a.txt").write_text("hello world\n")
    (tmp_path / "b.txt").write_text("goodbye world\n")
    out = tmp_path / "out"
    assert main(["prepare", str(tmp_path / "*.txt"), "--tokenizer", str(tok_path), "--out",
                 str(out), "--val-fraction", "0.5", "--workers", "1", "--quiet"]) == 0
    assert "prepared" in capsys.readouterr().out, "a summary line"
    meta = json.loads((out / "meta.json").read_text())
    assert meta["documents"] == {"train": 1, "val": 1}, "two files, one held out"
    tokens = [int(t) for split in ("train", "val") for t in open_shard(out / f"{split}_000000.bin")]
    assert sorted(tokens) == sorted(list(b"hello world\n") + list(b"goodbye world\n") + [256, 256])


def test_cli_prepare_named_dataset(tiny, tmp_path, tok_path, capsys):
    out = tmp_path / "out"
    assert main(["prepare", "--data", "tiny", "--cache-dir", str(tmp_path / "cache"),
                 "--tokenizer", str(tok_path), "--out", str(out), "--quiet"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["bytes"] == len(CONTENT) and meta["documents"] == {"train": 1, "val": 1}, \
        "one document: its tail is the validation split"


def test_cli_prepare_missing_input(tmp_path, tok_path, capsys):
    missing = tmp_path / "missing.txt"
    assert main(["prepare", str(missing), "--tokenizer", str(tok_path),
                 "--out", str(tmp_path / "o")]) == 2, "user error -> exit 2"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(missing) in err, f"one line naming the file: {err!r}"


def test_cli_prepare_into_a_file_is_a_user_error(tmp_path, tok_path, capsys):
    (tmp_path / "a.txt").write_text("hello world\n")
    (tmp_path / "afile").write_text("not a folder")
    assert main(["prepare", str(tmp_path / "a.txt"), "--tokenizer", str(tok_path),
                 "--out", str(tmp_path / "afile"), "--quiet"]) == 2, "user error -> exit 2"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "afile is a file, not a folder" in err, \
        f"one line naming the file: {err!r}"
