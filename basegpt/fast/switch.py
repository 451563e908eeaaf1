"""The one switch of basegpt.fast: on unless BASEGPT_FAST=0 or the program turns it off."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

ENV = "BASEGPT_FAST"
_ON, _OFF = ("1", "on", "true", "yes"), ("0", "off", "false", "no")
_setting: bool | None = None                  # set_enabled's choice; None: the environment's


def enabled() -> bool:
    """Whether basegpt uses its speed tricks: set_enabled's choice if it made one, else the
    environment's BASEGPT_FAST (1, the default, or 0)."""
    if _setting is not None:
        return _setting
    value = os.environ.get(ENV, "1")
    if value.strip().lower() in _ON:
        return True
    if value.strip().lower() in _OFF:
        return False
    raise ValueError(f"{ENV}={value!r} is not a switch: set it to 1 (the speed tricks, the "
                     "default) or 0 (the plain path only)")


def set_enabled(on: bool | None) -> None:
    """Turn the speed tricks on or off for this process (None: follow BASEGPT_FAST again).
    Models built or loaded afterwards and generate/fit calls started afterwards follow it."""
    global _setting
    if on is not None and not isinstance(on, bool):
        raise TypeError(f"set_enabled takes True, False or None, got {on!r}")
    _setting = on


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """`with basegpt.fast.disabled():` the plain path only, inside the block."""
    before = _setting
    set_enabled(False)
    try:
        yield
    finally:
        set_enabled(before)
