"""Loss curves: every panel draws each run's own numbers, and runs overlay in one figure."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("matplotlib", reason="plots need matplotlib (a runtime dependency)")

from basegpt.plot import loss_figure, plot_runs  # noqa: E402


def _run(folder: Path, steps: int, tokens_per_step: int, lr: float, eval_every: int,
         train_bpb: bool = True, val_bpb: bool = True) -> Path:
    """A run directory whose metrics.jsonl has a known loss, lr and eval at every step: in
    nats per token, and (unless told not to) in bits per byte at 2 bytes per token."""
    folder.mkdir()
    with open(folder / "metrics.jsonl", "w", encoding="utf-8") as f:
        for step in range(1, steps + 1):
            record = {"step": step, "tokens": step * tokens_per_step, "train_loss": 5.0 / step,
                      "lr": lr * step}
            if train_bpb:
                record["train_bpb"] = 1.0 / step
            if step % eval_every == 0:
                record["val_loss"] = 6.0 / step
                if val_bpb:
                    record["val_bpb"] = 2.0 / step
            f.write(json.dumps(record) + "\n")
    return folder


def _lines(ax) -> dict[str, tuple[list[float], list[float]]]:
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
            for line in ax.get_lines()}


def test_each_panel_draws_both_runs_with_their_own_numbers(tmp_path: Path):
    small = _run(tmp_path / "small", steps=4, tokens_per_step=100, lr=1e-3, eval_every=2)
    big = _run(tmp_path / "big", steps=2, tokens_per_step=400, lr=2e-3, eval_every=1)
    fig = loss_figure([small, big], units="nats")
    by_step, by_tokens, schedule = (_lines(ax) for ax in fig.axes[:3])

    assert by_step["small train"] == ([1, 2, 3, 4], [5.0, 2.5, 5 / 3, 1.25])
    assert by_step["small val"] == ([2, 4], [3.0, 1.5])
    assert by_step["big val"] == ([1, 2], [6.0, 3.0])
    # by tokens, train and val alike: the fair axis when batch sizes differ
    assert by_tokens["small train"] == ([100, 200, 300, 400], [5.0, 2.5, 5 / 3, 1.25])
    assert by_tokens["big train"] == ([400, 800], [5.0, 2.5])
    assert by_tokens["big val"] == ([400, 800], [6.0, 3.0])
    assert schedule["small"] == ([1, 2, 3, 4], pytest.approx([1e-3, 2e-3, 3e-3, 4e-3]))
    assert schedule["big"] == ([1, 2], pytest.approx([2e-3, 4e-3]))

    colors = {ax_line.get_label(): ax_line.get_color() for ax in fig.axes[:3]
              for ax_line in ax.get_lines()}
    assert colors["small train"] == colors["small val"] == colors["small"], "one colour a run"
    assert colors["small"] != colors["big"], "runs are told apart by colour"


def test_plot_runs_writes_a_png_and_refuses_a_folder_without_metrics(tmp_path: Path):
    run = _run(tmp_path / "run", steps=3, tokens_per_step=10, lr=1e-3, eval_every=3)
    out = plot_runs([run], tmp_path / "plots" / "loss.png", labels=["mine"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "a PNG file"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no metrics.jsonl records"):
        plot_runs([run, tmp_path / "empty"], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists(), "nothing written for a failed plot"


def test_losses_are_drawn_in_bits_per_byte_by_default(tmp_path: Path):
    """Bits per byte compare across vocabularies; they are the run's own numbers where it
    recorded them, and otherwise its losses over ln 2 and its text's bytes per token."""
    new = _run(tmp_path / "new", steps=4, tokens_per_step=100, lr=1e-3, eval_every=2)
    old = _run(tmp_path / "old", steps=4, tokens_per_step=100, lr=1e-3, eval_every=2,
               train_bpb=False)
    fig = loss_figure([new, old])
    by_step = _lines(fig.axes[0])
    assert fig.axes[0].get_ylabel() == "loss (bits per byte)", fig.axes[0].get_ylabel()
    assert by_step["new train"] == ([1, 2, 3, 4], [1.0, 0.5, 1 / 3, 0.25]), "train_bpb as recorded"
    assert by_step["new val"] == ([2, 4], [1.0, 0.5]), "val_bpb as recorded"
    # Last evaluation: val_loss 1.5 nats/token, val_bpb 0.5 -> 1.5 / (0.5 ln 2) bytes/token,
    # so train_loss L (nats/token) is L / ln 2 / that = L / 3 bits per byte.
    bytes_per_token = 1.5 / (0.5 * math.log(2))
    label = f"old train (at the val text's {bytes_per_token:.2f} bytes/token)"
    steps, bits = by_step[label]
    assert steps == [1, 2, 3, 4] and bits == pytest.approx([5 / 3, 5 / 6, 5 / 9, 5 / 12]), bits
    assert by_step["old val"] == ([2, 4], [1.0, 0.5])
    nats = _lines(loss_figure([new], units="nats").axes[0])
    assert nats["new train"][1] == [5.0, 2.5, 5 / 3, 1.25], "--units nats: as trained"


def test_a_run_without_bits_per_byte_names_the_other_units(tmp_path: Path):
    run = _run(tmp_path / "run", steps=2, tokens_per_step=10, lr=1e-3, eval_every=2,
               train_bpb=False, val_bpb=False)
    with pytest.raises(ValueError, match="run's metrics do not give its bits per byte.*"
                                         "with --units nats"):
        loss_figure([run])
    assert _lines(loss_figure([run], units="nats").axes[0])["run val"] == ([2], [3.0])


def test_the_schedule_says_when_it_follows_the_clock(tmp_path: Path):
    clock = _run(tmp_path / "clock", steps=2, tokens_per_step=10, lr=1e-3, eval_every=2)
    (clock / "config.json").write_text(json.dumps(
        {"train": {"max_minutes": 4, "max_steps": None, "epochs": None}}))
    steps = _run(tmp_path / "steps", steps=2, tokens_per_step=10, lr=1e-3, eval_every=2)
    (steps / "config.json").write_text(json.dumps(
        {"train": {"max_minutes": 4, "max_steps": 100, "epochs": None}}))
    schedule = loss_figure([clock, steps]).axes[2]
    assert set(_lines(schedule)) == {"clock (follows the clock: 4-minute budget)", "steps"}
    assert schedule.get_title() == "schedule (a time budget: the decay follows the clock)"
    assert loss_figure([steps]).axes[2].get_title() == "schedule", "planned over steps"
