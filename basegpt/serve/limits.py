"""What one server takes: the bounds a request must stay within, and how many may wait.
(No web stack here, so the command line can show the defaults without importing it.)"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """max_prompt_tokens: the longest prompt, in tokens (a longer one is a 400; one longer
    than the model's context slides, as in `basegpt generate`). max_tokens: the most new
    tokens a request may ask for. max_queue: the requests one model holds, running or
    waiting; one more gets a 429 at once."""

    max_prompt_tokens: int = 2048
    max_tokens: int = 1024
    max_queue: int = 64

    def __post_init__(self) -> None:
        for name in ("max_prompt_tokens", "max_tokens", "max_queue"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{name}={value!r} ({flag}): must be an integer >= 1")
