"""The package as a user meets it: imports, entry points, the built-in corpus."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from basegpt.corpus import (builtin_corpus, builtin_corpus_files, expand_paths, read_text_file,
                            stdlib_root, text_files)


def test_tokenizer_import_does_not_import_torch():
    code = "import sys, basegpt; from basegpt import Tokenizer; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", "the tokenizer must not need torch"


def test_python_dash_m_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "basegpt", "--help"], capture_output=True,
                         text=True)
    assert out.returncode == 0 and "tokenizer" in out.stdout, out.stderr


def test_version_flag_prints_the_package_version(capsys):
    import re
    import basegpt
    from basegpt.cli import main
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0, "a request, not an error"
    assert capsys.readouterr().out == f"basegpt {basegpt.__version__}\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+", basegpt.__version__), basegpt.__version__
    # One home for the version: the package metadata pip installs is read from it.
    text = (Path(__file__).parent.parent / "pyproject.toml").read_text(encoding="utf-8")
    assert 'dynamic = ["version"]' in text and \
        'version = { attr = "basegpt.__version__" }' in text, "pyproject.toml keeps no copy"


def test_builtin_corpus_is_deterministic_and_capped():
    first = list(builtin_corpus(200_000))
    again = list(builtin_corpus(200_000))
    assert first == again, "same Python, same corpus"
    size = sum(len(d.encode()) for d in first)
    assert 190_000 < size <= 200_000, f"cap respected, last file cut at a line end: {size}"
    assert first[-1].endswith("\n"), "the last document is cut at a line boundary"
    files = builtin_corpus_files()
    assert files == sorted(files), "files in sorted path order"
    parts = {part for f in files for part in f.relative_to(stdlib_root()).parts[:-1]}
    assert not parts & {"test", "tests", "idle_test", "site-packages"}, "test dirs excluded"


def test_skip_bytes_gives_disjoint_held_out_text():
    train = list(builtin_corpus(300_000))
    held_out = list(builtin_corpus(100_000, skip_bytes=300_000))
    assert held_out and not set(held_out) & set(train), "held-out files are not training files"


def test_expand_paths_and_read_errors(tmp_path: Path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b.txt").write_text("b")
    (tmp_path / "a.txt").write_text("a")
    assert expand_paths([tmp_path / "d", str(tmp_path / "*.txt")]) == \
        [tmp_path / "d" / "b.txt", tmp_path / "a.txt"], "folders recurse, globs expand"
    with pytest.raises(FileNotFoundError, match="no such file, folder or glob match"):
        expand_paths([tmp_path / "missing"])
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match="bad.txt is not valid UTF-8"):
        read_text_file(tmp_path / "bad.txt")


def test_expand_paths_skips_hidden_files_and_excluded_folders(tmp_path: Path):
    for name in ("a.txt", ".hidden.txt", ".git/HEAD", "sub/b.txt", "sub/.cache/c.txt",
                 "out/train_000000.bin"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    assert expand_paths([tmp_path], exclude=[tmp_path / "out"]) == \
        [tmp_path / "a.txt", tmp_path / "sub" / "b.txt"], "no dot-names, nothing under out/"
    assert tmp_path / "out" / "train_000000.bin" in expand_paths([tmp_path]), "out/ by default"
    assert expand_paths([f"{tmp_path}/**/*"], exclude=[tmp_path / "out"]) == \
        [tmp_path / "a.txt", tmp_path / "sub" / "b.txt"], "globs skip the excluded folder too"
    assert expand_paths([tmp_path / ".hidden.txt"]) == [tmp_path / ".hidden.txt"], \
        "a file named explicitly is taken"
    with pytest.raises(FileNotFoundError, match="the folder holds no files to read .hidden "
                                                "files and the output folder are skipped"):
        expand_paths([tmp_path / "out"], exclude=[tmp_path / "out"])


LATIN1 = "café crème brûlée\n".encode("latin-1")
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))


def test_a_folder_s_binary_and_non_utf8_files_are_skipped_with_a_warning(tmp_path: Path):
    """One stray file does not stop a run: each is named, and only the Latin-1 one gets the
    iconv advice. A file named on its own is read (and fails, saying why)."""
    (tmp_path / "a.txt").write_text("plain text\n")
    (tmp_path / "b.txt").write_bytes(LATIN1)
    (tmp_path / "c.png").write_bytes(PNG)
    (tmp_path / "d.txt").write_bytes("“quoted”\n".encode("cp1252"))
    with pytest.warns(UserWarning) as caught:
        assert text_files([tmp_path]) == [tmp_path / "a.txt"], "only the UTF-8 text"
    messages = sorted(str(w.message) for w in caught)
    assert messages[0].startswith(f"skipped {tmp_path / 'b.txt'}: not valid UTF-8 (byte 3: ") \
        and messages[0].endswith(f"it looks like Latin-1 text: convert it first, e.g. iconv -f "
                                 f"latin1 -t utf-8 {tmp_path / 'b.txt'} > "
                                 f"{tmp_path / 'b.utf8.txt'}"), messages[0]
    assert messages[1] == f"skipped {tmp_path / 'c.png'}: a binary file (a NUL byte at byte 8)", \
        messages[1]
    assert "iconv -f cp1252" in messages[2] and "Windows-1252" in messages[2], messages[2]
    assert len(messages) == 3, messages
    assert text_files([tmp_path / "b.txt"]) == [tmp_path / "b.txt"], "named: kept"


def test_conversion_is_advised_only_for_bytes_that_look_like_text(tmp_path: Path):
    (tmp_path / "latin.txt").write_bytes(LATIN1)
    with pytest.raises(ValueError, match=r"latin.txt is not valid UTF-8 \(byte 3: .*"
                                         r"it looks like Latin-1 text: convert it first, "
                                         r"e.g. iconv -f latin1 -t utf-8"):
        read_text_file(tmp_path / "latin.txt")
    (tmp_path / "image.jpg").write_bytes(b"\xff\xd8\xff\xe0\x10JFIF\x01\x02\x03" * 8)
    with pytest.raises(ValueError) as error:
        read_text_file(tmp_path / "image.jpg")
    assert str(error.value).startswith(f"{tmp_path / 'image.jpg'} is not valid UTF-8 (byte 0: ")
    assert "iconv -f" not in str(error.value) and "Latin-1" not in str(error.value), \
        f"no conversion advice for bytes that are not text: {error.value}"


def test_a_folder_with_no_text_left_is_an_error_naming_it(tmp_path: Path):
    (tmp_path / "c.png").write_bytes(PNG)
    with pytest.warns(UserWarning, match="c.png: a binary file"):
        with pytest.raises(ValueError, match=f"no UTF-8 text in {tmp_path}: all 1 file.s. "
                                             "found were skipped"):
            text_files([tmp_path])
