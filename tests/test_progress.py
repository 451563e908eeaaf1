"""Progress as a user sees it: a bar at a terminal, with messages above it and not glued to
its end; plain lines, a few of them, in a log file; and a speed that one step does not swing."""

from __future__ import annotations

import io
import math

import pytest
from tqdm.auto import tqdm

import basegpt.progress
from basegpt.cli import main
from basegpt.progress import progress_bar
from basegpt.train import _Speed

TINY = ["--n-block", "2", "--n-embed", "32", "--n-head", "2", "--n-k", "16", "--n-v", "16",
        "--n-ff", "64", "--n-context", "32", "--batch-size", "4", "--vocab-size", "300",
        "--max-bytes", "100000", "--eval-tokens", "256", "--device", "cpu"]


class Terminal(io.StringIO):
    """What a terminal receives (tqdm draws its bar only where isatty() is True)."""

    def isatty(self) -> bool:
        return True


def test_lines_in_a_file_count_whole_seconds_and_never_move_the_cursor(monkeypatch):
    """A time-budget bar counts float seconds, and `basegpt compare` opens train's bar inside
    its own: in a file each line says 30/240 s (not 30.06778401200063/240.0) and no bar
    writes the cursor moves that stack bars at a terminal."""
    log = io.StringIO()
    monkeypatch.setattr(basegpt.progress, "LOG_EVERY", 0.0)
    with progress_bar(2, "compare", "run", file=log, position=0) as outer:
        with progress_bar(240.0, "train", "s", file=log) as inner:
            inner.update(30.06778401200063)
        outer.update(1)
    text = log.getvalue()
    assert "\x1b" not in text, repr(text)
    assert "train: 30/240 s (13%)" in text, text
    assert "compare: 1/2 run (50%)" in text, text


def test_a_bar_in_a_file_is_a_line_at_most_every_log_every_seconds(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(basegpt.progress, "LOG_EVERY", 0.0)    # a line for every update
    with progress_bar(3, "train", "step", file=log) as bar:
        for loss in (3.0, 2.0, 1.0):
            bar.set_postfix(loss=f"{loss:.1f}", refresh=False)
            bar.update(1)
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue(), "no redraws in a file"
    assert [line.split(", 00:")[0] for line in lines] == [
        "train: 1/3 step (33%), loss=3.0", "train: 2/3 step (67%), loss=2.0",
        "train: 3/3 step (100%), loss=1.0"], lines
    assert all(line.endswith(" left") and " elapsed, " in line for line in lines), lines

    monkeypatch.setattr(basegpt.progress, "LOG_EVERY", 3600.0)
    log = io.StringIO()
    with progress_bar(500, "train", "step", file=log) as bar:
        for _ in range(500):
            bar.update(1)
    assert log.getvalue().splitlines() == [log.getvalue().strip()] and \
        log.getvalue().startswith("train: 500/500 step (100%)"), \
        f"within the interval only the last state, once: {log.getvalue()!r}"


def test_a_bar_at_a_terminal_is_drawn_in_place_and_messages_go_above_it():
    screen = Terminal()
    with progress_bar(2, "train", "step", file=screen) as bar:
        bar.update(1)
        tqdm.write("step 1: val_loss 2.0", file=screen)
        bar.update(1)
    text = screen.getvalue()
    assert "\r" in text and "|" in text, f"a bar, redrawn in place: {text!r}"
    line = next(line for line in text.split("\n") if "val_loss" in line)
    assert line.split("\r")[-1] == "step 1: val_loss 2.0", \
        f"the message starts a line of its own: {line!r}"


def test_the_speed_shown_is_tokens_over_seconds_of_the_last_steps():
    speed = _Speed(window=3)
    assert speed.add(100, 1.0) == 100.0
    assert speed.add(100, 0.01) == pytest.approx(200 / 1.01), "not the mean of 100 and 10,000"
    speed.add(100, 1.0)
    assert speed.add(100, 1.0) == pytest.approx(300 / 2.01), "the oldest step left the window"
    assert math.isfinite(_Speed().add(100, 0.0)), "a step too fast to time"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One cache for the training runs here: the tokenizer and shards are made once."""
    return tmp_path_factory.mktemp("cache")


@pytest.mark.slow                 # two tiny training runs: a few seconds each
def test_training_into_a_log_file_writes_a_few_plain_lines(cache, tmp_path, capsys,
                                                           monkeypatch):
    """A log file (stderr not a terminal) gets lines, not redraws: the earlier bar wrote a
    copy of itself per redraw, some 200 KB in 4 minutes."""
    monkeypatch.setenv("BASEGPT_CACHE", str(cache))
    assert main(["train", *TINY, "--max-steps", "40", "--eval-every", "20",
                 "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err, f"no carriage returns in a log: {err[:500]!r}"
    assert len(err) < 4000, f"{len(err)} bytes of log for 40 steps:\n{err}"
    train = [line for line in err.splitlines() if line.startswith("train: ")]
    assert 1 <= len(train) <= 3 and train[-1].startswith("train: 40/40 step (100%), loss="), \
        f"a line every {basegpt.progress.LOG_EVERY:g} s and the last: {train}"
    assert "tok/s=" in train[-1] and " elapsed, 00:00 left" in train[-1], train[-1]
    evals = [line for line in err.splitlines() if "val_loss" in line]
    assert [line.split(":")[0] for line in evals] == ["step 20", "step 40"], evals


@pytest.mark.slow
def test_training_at_a_terminal_writes_its_log_above_the_bar(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("BASEGPT_CACHE", str(cache))
    screen = Terminal()
    monkeypatch.setattr("sys.stderr", screen)
    assert main(["train", *TINY, "--max-steps", "4", "--eval-every", "2",
                 "--out", str(tmp_path / "run")]) == 0
    lines = [line for line in screen.getvalue().split("\n") if "val_loss" in line]
    assert len(lines) == 2, screen.getvalue()[-2000:]
    for line in lines:
        assert line.split("\r")[-1].startswith("step "), \
            f"an evaluation glued to the bar's end: {line!r}"
