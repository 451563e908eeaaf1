"""Progress of a long loop (BPE merges, tokenizing, training): a bar at a terminal, lines elsewhere.

At a terminal, tqdm redraws one line in place. Sent to a file or a pipe (a job's log,
`2> train.log`, CI), each redraw is a carriage return and the whole line again, never erased:
a few minutes of training wrote hundreds of kilobytes of them. So where the output is not a
terminal, the same numbers come as plain lines, one at most every LOG_EVERY seconds, and one
at the end:

    train: 120/500 step (24%), loss=3.412, lr=8.20e-04, tok/s=41,230, 00:40 elapsed, 02:06 left

Either way it is a tqdm object: `update`, `set_postfix(..., refresh=False)` (a postfix alone
never prints), `close`, and messages through `tqdm.write`, which writes them above a terminal
bar instead of onto its end.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from tqdm.auto import tqdm

LOG_EVERY = 10.0
"""Seconds between two progress lines when the output is not a terminal."""

LINE_FORMAT = ("{desc}: {n_fmt}/{total_fmt} {unit} ({percentage:.0f}%){postfix}, "
               "{elapsed} elapsed, {remaining} left")
"""A progress line: the bar's numbers without the bar (tqdm puts ", " before the postfix)."""


def progress_bar(total: float | None, desc: str, unit: str, *, show: bool = True,
                 file: TextIO | None = None, bar_format: str | None = None,
                 **tqdm_args: Any) -> tqdm:
    """A tqdm bar on `file` (default stderr) if it is a terminal, else one that writes a
    line every LOG_EVERY seconds and at the end; nothing at all unless `show`. `bar_format`
    is for the terminal's bar; the lines have their own (LINE_FORMAT)."""
    file = sys.stderr if file is None else file
    if not show or at_terminal(file):
        return tqdm(total=total, desc=desc, unit=unit, file=file, disable=not show,
                    dynamic_ncols=True, bar_format=bar_format, **tqdm_args)
    # A line stands alone: position 0 whatever other bars are open, since tqdm moves the
    # cursor (escape codes, in a file) to draw a stacked bar; a bar that would vanish from a
    # terminal when done (leave=False) still writes its last line; and seconds are counted
    # whole (the bar's n is a float).
    tqdm_args["position"] = 0
    tqdm_args["leave"] = True
    line_format = (LINE_FORMAT.replace("{n_fmt}/{total_fmt}", "{n:.0f}/{total:.0f}")
                   if unit == "s" else LINE_FORMAT)
    return tqdm(total=total, desc=desc, unit=unit, file=_Lines(file), mininterval=LOG_EVERY,
                bar_format=line_format, ascii=True, **tqdm_args)


def at_terminal(file: TextIO) -> bool:
    """Whether `file` is a terminal (a closed or fake file is not)."""
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):
        return False


class _Lines:
    """The file a line-writing bar draws on: each redraw (a carriage return, the line and
    spaces to cover a longer one) becomes a line of its own. The first drawing (the bar
    opening, at its start: nothing done yet) and a repeat of the last line (the final state,
    drawn again when the bar closes) are left out."""

    def __init__(self, file: TextIO) -> None:
        self.file = file
        self.last: str | None = None            # None: the bar has not drawn yet

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if not line or line == self.last:
            return
        if self.last is not None:
            self.file.write(line + "\n")
        self.last = line

    def flush(self) -> None:
        self.file.flush()

    def __getattr__(self, name: str) -> Any:          # encoding, fileno, ...
        return getattr(self.file, name)
