"""Loss curves: loss.png for one run, or several runs overlaid for comparison.

Three panels from each run's metrics.jsonl: loss against optimizer steps (train, and
validation where evaluated), the same losses against tokens seen (the fair axis when runs
use different batch sizes), and the learning rate schedule. matplotlib is imported here only,
with the non-interactive Agg backend, so plotting works on machines without a display.

Losses are drawn in bits per byte by default: a loss in nats per token depends on how much
text a token holds, so runs with different tokenizers (vocab 500 against 4096) cannot be
compared in it, while bits per byte of the same text can. The conversion of a loss L in
nats per token is exact, per step, from the bytes of text its targets stand for:

    bits per byte = L * tokens / ln(2) / bytes  =  L / ln(2) / (bytes per token)

Training records it as train_bpb (and evaluation as val_bpb). For a run made before
train_bpb was recorded, the training curve is converted with the bytes per token of its
validation text, val_loss / (val_bpb * ln 2) at its last evaluation, and says so in its label.
`units="nats"` draws the losses as recorded, in nats per token.

A run trained under a time budget alone follows the clock: its learning rate decays with
the minutes, not with a number of steps planned ahead. Its schedule is labelled so.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from basegpt._optional import require

if TYPE_CHECKING:                       # matplotlib is imported where used, not at import time
    from matplotlib.figure import Figure

UNITS = {"bpb": "bits per byte", "nats": "nats per token"}
"""The units a loss can be drawn in: bits per byte of text, or nats per token (as trained)."""


def plot_runs(run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike,
              labels: Sequence[str] | None = None, units: str = "bpb") -> Path:
    """Draw the runs' curves into `out` (a .png), atomically. Returns the path."""
    return save_figure(loss_figure(run_dirs, labels, units), out)


def loss_figure(run_dirs: Sequence[str | os.PathLike],
                labels: Sequence[str] | None = None, units: str = "bpb") -> Figure:
    """The three panels for the runs, one colour per run (labels default to the folder
    names), losses in `units` ("bpb" or "nats", see UNITS)."""
    if units not in UNITS:
        raise ValueError(f"unknown units {units!r}; choose one of: {', '.join(UNITS)}")
    runs = [Path(r) for r in run_dirs]
    labels = list(labels) if labels else [r.name for r in runs]
    curves = [loss_curves(run, units) for run in runs]     # errors before any drawing
    require("matplotlib", "drawing loss curves").use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_step, ax_tokens, ax_lr) = plt.subplots(1, 3, figsize=(15, 4.2))
    for run, label, curve in zip(runs, labels, curves):
        color = None
        for ax, x in ((ax_step, "step"), (ax_tokens, "tokens")):
            line, = ax.plot(curve["train"][x], curve["train"]["loss"], alpha=0.5,
                            color=color, label=f"{label} train{curve['train_note']}")
            color = line.get_color()
            if curve["val"]["loss"]:
                ax.plot(curve["val"][x], curve["val"]["loss"], "o-", color=color,
                        label=f"{label} val")
        clock = f" (follows the clock: {curve['clock']:g}-minute budget)" if curve["clock"] \
            else ""
        ax_lr.plot(curve["lr"]["step"], curve["lr"]["lr"], color=color, label=label + clock)
    ylabel = f"loss ({UNITS[units]})"
    ax_step.set(xlabel="step", ylabel=ylabel, title="loss by step")
    ax_tokens.set(xlabel="tokens seen", ylabel=ylabel, title="loss by tokens")
    by_clock = any(curve["clock"] for curve in curves)
    ax_lr.set(xlabel="step", ylabel="learning rate",
              title="schedule" + (" (a time budget: the decay follows the clock)" if by_clock
                                  else ""))
    for ax in (ax_step, ax_tokens, ax_lr):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def loss_curves(run_dir: str | os.PathLike, units: str = "bpb") -> dict[str, Any]:
    """One run's curves, as drawn: {"train": {"step", "tokens", "loss"}, "val": {...},
    "lr": {"step", "lr"}, "train_note": "" or how the training loss was converted,
    "clock": the minutes of a time budget the schedule follows, or None}, each a list."""
    from basegpt.train_state import read_metrics
    run = Path(run_dir)
    records = read_metrics(run)
    if not records:
        raise ValueError(f"{run} has no metrics.jsonl records to plot; is it a run directory?")
    evals = [r for r in records if "val_loss" in r]
    if units == "bpb" and any("val_bpb" not in r for r in evals):
        raise _no_bits_per_byte(run)
    train_loss, note = _train_losses(run, records, evals, units)
    val_loss = [r["val_loss"] if units == "nats" else r.get("val_bpb") for r in evals]
    return {"train": {"step": [r["step"] for r in records],
                      "tokens": [r["tokens"] for r in records], "loss": train_loss},
            "val": {"step": [r["step"] for r in evals], "tokens": [r["tokens"] for r in evals],
                    "loss": val_loss},
            "lr": {"step": [r["step"] for r in records], "lr": [r["lr"] for r in records]},
            "train_note": note, "clock": _clock_budget(run)}


def _train_losses(run: Path, records: list[dict[str, Any]], evals: list[dict[str, Any]],
                  units: str) -> tuple[list[float], str]:
    """The training losses in `units`, and a note for the label when they were converted
    with the validation text's bytes per token (see the module docstring)."""
    if units == "nats":
        return [r["train_loss"] for r in records], ""
    if all("train_bpb" in r for r in records):
        return [r["train_bpb"] for r in records], ""
    last = next((r for r in reversed(evals) if r["val_bpb"]), None)
    if last is None:
        raise _no_bits_per_byte(run)
    bytes_per_token = last["val_loss"] / (last["val_bpb"] * math.log(2))
    return ([r["train_bpb"] if "train_bpb" in r
             else r["train_loss"] / math.log(2) / bytes_per_token for r in records],
            f" (at the val text's {bytes_per_token:.2f} bytes/token)")


def _no_bits_per_byte(run: Path) -> ValueError:
    return ValueError(f"{run}'s metrics do not give its bits per byte (no train_bpb, and no "
                      "evaluation with val_bpb to convert with); plot it in nats per token "
                      "with --units nats (units='nats')")


def _clock_budget(run: Path) -> float | None:
    """The minutes of the time budget a run's schedule follows (a max_minutes and no steps
    or epochs budget, in its config.json), or None: its decay is planned over steps."""
    try:
        train = json.loads((run / "config.json").read_text(encoding="utf-8")).get("train")
    except (OSError, ValueError, AttributeError):
        return None                     # no config (metrics alone): nothing to say
    if not isinstance(train, dict) or train.get("max_steps") or train.get("epochs"):
        return None
    return train.get("max_minutes") or None


def save_figure(fig: Figure, out: str | os.PathLike) -> Path:
    """Write a matplotlib figure to the PNG `out` atomically, close it, and return `out` as a
    Path. Its folder is created if missing; a crash or a full disk mid-write leaves any
    earlier `out` intact (readers never see half a PNG), and an error names `out`."""
    import io
    import matplotlib.pyplot as plt
    from basegpt._io import atomic_write_bytes
    out = Path(out)
    # Drawn in memory (a PNG is small) so that the one atomic writer does the disk part.
    png = io.BytesIO()
    try:
        fig.savefig(png, format="png", dpi=100)
    finally:
        plt.close(fig)
    atomic_write_bytes(out, png.getvalue())
    return out
