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
    assert main(["tokenizer", "train", str(tmp_path / "*.txt"), "--vocab-size", "270",
                 "--out", str(out), "--quiet"]) == 0
    assert Tokenizer.load(out).encode("hello") == Tokenizer(vocab_size=270).train(
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
])
def test_user_errors_exit_2_with_one_line(argv, message, capsys):
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
