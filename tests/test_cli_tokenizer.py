"""`basegpt tokenizer ...` and `basegpt corpus` through the real entry point."""

from __future__ import annotations

from pathlib import Path

import pytest

from basegpt import Tokenizer
from basegpt.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tok") / "tok.json"
    assert main(["tokenizer", "train", "--vocab-size", "400", "--max-bytes", "100000",
                 "--out", str(out), "--quiet"]) == 0, "train on the built-in corpus"
    return out


def test_train_writes_tokenizer_and_vocab(trained, capsys):
    tokenizer = Tokenizer.load(trained)
    assert len(tokenizer) == 400, "vocab size as asked"
    assert trained.with_suffix(".vocab").is_file(), ".vocab beside tokenizer.json"


def test_train_on_files(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("hello world " * 50)
    out = tmp_path / "t.json"
    assert main(["tokenizer", "train", str(tmp_path / "*.txt"), "--vocab-size", "268",
                 "--out", str(out), "--quiet"]) == 0
    assert Tokenizer.load(out).encode("hello") == Tokenizer(vocab_size=268).train(
        "hello world " * 50, progress=False).encode("hello"), "same as the library"


def test_encode_decode_round_trip(trained, capsys):
    assert main(["tokenizer", "encode", "--tokenizer", str(trained), "héllo <|endoftext|>"]) == 0
    ids = capsys.readouterr().out.split()
    tokenizer = Tokenizer.load(trained)
    assert [int(i) for i in ids] == tokenizer.encode("héllo <|endoftext|>"), "printed ids"
    assert main(["tokenizer", "decode", "--tokenizer", str(trained), *ids]) == 0
    assert capsys.readouterr().out == "héllo <|endoftext|>\n", "decode prints the text"
    assert main(["tokenizer", "encode", "--tokenizer", str(trained), "--allow-special",
                 "<|endoftext|>"]) == 0
    assert capsys.readouterr().out.split() == [str(tokenizer.eot_id)], "special allowed"


def test_stats_reports_bytes_per_token(trained, capsys, tmp_path):
    (tmp_path / "held.txt").write_text("def f(x):\n    return x\n" * 20)
    assert main(["tokenizer", "stats", "--tokenizer", str(trained), str(tmp_path / "held.txt")]) == 0
    out = capsys.readouterr().out
    tokenizer = Tokenizer.load(trained)
    text = (tmp_path / "held.txt").read_text()
    expected = len(text.encode()) / len(tokenizer.encode(text))
    assert f"{expected:.3f} bytes per token" in out, out


@pytest.mark.parametrize("argv, message", [
    (["tokenizer", "decode", "--tokenizer", "/nonexistent/tok.json", "1"], "no such tokenizer file"),
    (["tokenizer", "train", "/nonexistent/*.txt", "--out", "x.json"], "no such file, folder"),
    (["tokenizer", "train", "--vocab-size", "10", "--out", "x.json"], "too small"),
    (["tokenizer", "encode", "--tokenizer", "x.json"], "either a TEXT argument or --file"),
    (["tokenizer", "train", "--pattern", "[a-z]+", "--out", "x.json"],
     "custom split pattern '[a-z]+' does not match 'H' at index 0"),
])
def test_user_errors_exit_2_with_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)           # were a check to break, x.json would land here
    assert main(argv) == 2, "user error exit code"
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, f"one line naming the problem: {err!r}"


def test_decode_out_of_range_is_a_user_error(trained, capsys):
    assert main(["tokenizer", "decode", "--tokenizer", str(trained), "5000"]) == 2
    assert "token id 5000 is out of range" in capsys.readouterr().err


def test_bad_flag_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["tokenizer", "train", "--no-such-flag"])
    assert exit_info.value.code == 2, "argparse errors are user errors"
    assert capsys.readouterr().err.count("\n") == 1, "one line"


def test_corpus_command(tmp_path, capsys):
    assert main(["corpus", "--max-bytes", "50000", "--out", str(tmp_path / "c.txt")]) == 0
    assert "built-in corpus" in capsys.readouterr().out
    assert 0 < (tmp_path / "c.txt").stat().st_size <= 50_000 + 1000, "written, about the budget"


def test_stats_previews_the_vocabulary(tmp_path, capsys):
    # "hello" is built by merges 256..259 ('el', 'hel', 'lo', 'hello'), then " hello" (260).
    path = tmp_path / "hello.json"
    Tokenizer(vocab_size=263).train("hello hello hello", progress=False).save(path)
    (tmp_path / "held.txt").write_text("hello hello")
    assert main(["tokenizer", "stats", "--tokenizer", str(path), "--top", "2",
                 str(tmp_path / "held.txt")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "11 bytes -> 2 tokens = 5.500 bytes per token" in lines[1], lines[1]
    assert lines[2:] == ["first merges: 'el'  'hel'", "last merges: 'hello'  ' hello'",
                         "longest tokens: ' hello'  'hello'"], lines


def test_train_on_a_folder_with_a_custom_pattern(tmp_path, capsys):
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("ab ab")
    (folder / "sub" / "b.txt").write_text("cd")            # found because folders are recursive
    out = tmp_path / "t.json"
    pattern = r"[a-z ]+|\s+|."                             # letters and spaces in one chunk
    assert main(["tokenizer", "train", str(folder), "--pattern", pattern, "--vocab-size", "262",
                 "--out", str(out), "--quiet"]) == 0
    tokenizer = Tokenizer.load(out)
    assert tokenizer.splitter.pattern == pattern, "the custom pattern is stored"
    # pairs: ab=2, 'b '=1, ' a'=1, cd=1 -> (a, b); then (' ', ab) wins the tie at 1 count over
    # (ab, ' '), then (c, d); then (ab, ' ab') merges across the space, which gpt4 never would.
    assert tokenizer.merges == [(97, 98), (32, 256), (99, 100), (256, 257)], tokenizer.merges
    assert tokenizer.encode("ab ab cd") == [259, 32, 258], "ids from the learned merges"
    assert "2 file(s)" in capsys.readouterr().err, "both files of the folder were read"


def test_train_warns_in_one_line_when_the_text_runs_out_of_pairs(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("ab ab")
    out = tmp_path / "t.json"
    assert main(["tokenizer", "train", str(tmp_path / "a.txt"), "--vocab-size", "300",
                 "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    warning = [line for line in err.splitlines() if "warning" in line]
    assert warning == ["basegpt: warning: learned only 2 of the 42 merges that vocab_size=300 "
                       "asks for: every chunk of the text is already one token; the vocabulary "
                       "has 260 tokens. Train on more text, or ask for vocab_size=260"], err
    assert len(Tokenizer.load(out)) == 260, "the smaller tokenizer is still written"


def test_out_folder_is_refused_before_training(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("hello world " * 20)
    assert main(["tokenizer", "train", str(tmp_path / "a.txt"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "training a" not in err, f"refused up front: {err!r}"
    assert f"--out {tmp_path} is a folder" in err and "tokenizer.json" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"], "nothing written"
    (tmp_path / "t.vocab").mkdir()                        # where --out t.json puts its .vocab
    assert main(["tokenizer", "train", str(tmp_path / "a.txt"),
                 "--out", str(tmp_path / "t.json")]) == 2
    err = capsys.readouterr().err
    assert "t.vocab, but that is a folder" in err and "training a" not in err, err


def test_a_folder_of_empty_files_is_a_user_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("")
    out = tmp_path / "t.json"
    assert main(["tokenizer", "train", str(tmp_path / "empty"), "--out", str(out),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "basegpt: error: no text to train on" in err, err
    assert not out.exists(), "no 258-token tokenizer written"


def test_a_reader_that_goes_away_is_no_error(tmp_path):
    """`basegpt tokenizer encode ... | head`: the pipe closes while basegpt still writes;
    it stops quietly, exit 0, as any command-line tool does."""
    import os
    import subprocess
    import sys
    Tokenizer(vocab_size=260).train("abc " * 50, progress=False).save(tmp_path / "tok.json")
    (tmp_path / "text.txt").write_text("hello world " * 5000)      # more than a pipe's buffer
    proc = subprocess.Popen([sys.executable, "-m", "basegpt", "tokenizer", "encode",
                             "--tokenizer", str(tmp_path / "tok.json"), "--file",
                             str(tmp_path / "text.txt")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    proc.stdout.close()                                              # the reader is gone
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0 and "Traceback" not in err, err[-2000:]
