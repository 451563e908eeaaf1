"""Loss curves: loss.png for one run, or several runs overlaid for comparison.

Three panels from each run's metrics.jsonl: loss against optimizer steps (train, and
validation where evaluated), the same losses against tokens seen (the fair axis when runs
use different batch sizes), and the learning rate schedule. matplotlib is imported here only,
with the non-interactive Agg backend, so plotting works on machines without a display.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from basegpt._optional import require

if TYPE_CHECKING:                       # matplotlib is imported where used, not at import time
    from matplotlib.figure import Figure


def plot_runs(run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike,
              labels: Sequence[str] | None = None) -> Path:
    """Draw the runs' curves into `out` (a .png), atomically. Returns the path."""
    return save_figure(loss_figure(run_dirs, labels), out)


def loss_figure(run_dirs: Sequence[str | os.PathLike],
                labels: Sequence[str] | None = None) -> Figure:
    """The three panels for the runs, one colour per run (labels default to the folder names)."""
    require("matplotlib", "drawing loss curves").use("Agg")
    import matplotlib.pyplot as plt
    from basegpt.train_state import read_metrics

    runs = [Path(r) for r in run_dirs]
    labels = list(labels) if labels else [r.name for r in runs]
    fig, (ax_step, ax_tokens, ax_lr) = plt.subplots(1, 3, figsize=(15, 4.2))
    for run, label in zip(runs, labels):
        records = read_metrics(run)
        if not records:
            plt.close(fig)
            raise ValueError(f"{run} has no metrics.jsonl records to plot; is it a run directory?")
        evals = [r for r in records if "val_loss" in r]
        color = None
        for ax, x in ((ax_step, "step"), (ax_tokens, "tokens")):
            line, = ax.plot([r[x] for r in records], [r["train_loss"] for r in records],
                            alpha=0.5, color=color, label=f"{label} train")
            color = line.get_color()
            if evals:
                ax.plot([r[x] for r in evals], [r["val_loss"] for r in evals], "o-",
                        color=color, label=f"{label} val")
        ax_lr.plot([r["step"] for r in records], [r["lr"] for r in records], color=color,
                   label=label)
    ax_step.set(xlabel="step", ylabel="loss (nats/token)", title="loss by step")
    ax_tokens.set(xlabel="tokens seen", ylabel="loss (nats/token)", title="loss by tokens")
    ax_lr.set(xlabel="step", ylabel="learning rate", title="schedule")
    for ax in (ax_step, ax_tokens, ax_lr):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


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
