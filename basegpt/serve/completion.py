"""Answering a completions request on the worker's thread: every choice through
`basegpt.generate.stream`, as `basegpt generate` runs it, and the logprobs from `score_ids_with_top`.

    job = completion_job(parse_completion(body, limits), limits)
    completion = worker.submit(job).result()      # .choices, .usage

With `emit`, the job hands out text pieces as they are generated (for streaming); the event
loop sends them (api.py). Nothing here knows HTTP.
"""

from __future__ import annotations

import codecs
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from basegpt.checkpoint import Run
from basegpt.generate import encode_prompt, score_ids_with_top, stream
from basegpt.serve.errors import bad_request
from basegpt.serve.limits import Limits
from basegpt.serve.request import CompletionRequest


@dataclass
class Choice:
    """One generated choice, as the response lists it."""

    index: int
    text: str                       # the prompt's text first when echo
    finish_reason: str              # OpenAI's: "stop" (end-of-text or a stop string) or "length"
    logprobs: dict[str, list] | None
    completion_tokens: int

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "text": self.text, "logprobs": self.logprobs,
                "finish_reason": self.finish_reason}


@dataclass
class Completion:
    """What a request's job returns: its choices and the prompt tokens it read."""

    choices: list[Choice]
    prompt_tokens: int

    @property
    def usage(self) -> dict[str, int]:
        done = sum(c.completion_tokens for c in self.choices)
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": done,
                "total_tokens": self.prompt_tokens + done}


# What a streaming job emits, in order, for the event loop to send: STARTED once the prompts
# are checked (so an error before it is still a plain HTTP error), then per choice its pieces
# (PIECE, index, text) and (FINISH, index, finish_reason, logprobs or None). The logprobs come
# whole with the choice's last chunk: they are scored over the finished text, as without
# streaming, so a client that joins the chunks' logprobs gets the unstreamed answer's.
STARTED, PIECE, FINISH = "started", "piece", "finish"
Emit = Callable[[tuple], None]


def completion_job(request: CompletionRequest, limits: Limits, emit: Emit | None = None,
                   cancelled: threading.Event | None = None) -> Callable[[Run], Completion | None]:
    """The job a worker runs for `request`: every choice of every prompt, one after another
    on the run's model. With `emit`, text pieces are handed out as they are generated; once
    `cancelled` is set (the client went away), it stops and returns None."""

    def job(run: Run) -> Completion | None:
        prompts = [_prompt_ids(run, prompt, p, limits) for p, prompt in enumerate(request.prompts)]
        if emit is not None:
            emit((STARTED,))
        choices = []
        for p, (ids, text) in enumerate(prompts):
            for i in range(request.n):
                if cancelled is not None and cancelled.is_set():
                    return None
                choice = _one_choice(run, request, ids, text, i, p * request.n + i, emit,
                                     cancelled)
                if choice is None:
                    return None
                choices.append(choice)
        return Completion(choices, prompt_tokens=sum(len(ids) for ids, _ in prompts))
    return job


def _prompt_ids(run: Run, prompt: str | list[int], p: int, limits: Limits) -> tuple[list[int], str]:
    """A prompt's token ids and text (the text `echo` shows), checked against the model and
    the server's --max-prompt-tokens."""
    where = "prompt" if p == 0 else f"prompt {p}"
    V = run.model.config.vocab_size
    if isinstance(prompt, str):
        try:
            ids = encode_prompt(run.tokenizer, prompt, run.model)
        except ValueError as error:
            raise bad_request(f"{where}: {error}", "prompt") from None
        text = prompt
    else:
        bad = [t for t in prompt if t >= V]
        if bad:
            raise bad_request(f"{where} holds token id {bad[0]}, out of range: this model's ids "
                              f"are 0..{V - 1}", "prompt")
        ids, text = prompt, run.tokenizer.decode(prompt)
    if len(ids) > limits.max_prompt_tokens:
        raise bad_request(f"{where} is {len(ids)} tokens, more than this server takes "
                          f"(--max-prompt-tokens {limits.max_prompt_tokens}); shorten it",
                          "prompt", code="context_length_exceeded")
    return ids, text


def _one_choice(run: Run, request: CompletionRequest, ids: list[int], prompt_text: str, i: int,
                index: int, emit: Emit | None, cancelled: threading.Event | None) -> Choice | None:
    """Choice i of one prompt (seed + i), streamed through `emit` if given."""
    pieces = stream(run.model, run.tokenizer, ids, config=request.choice_config(i))
    if emit is not None and request.echo and prompt_text:
        emit((PIECE, index, prompt_text))
    text = []
    for piece in pieces:
        if cancelled is not None and cancelled.is_set():
            pieces.close()
            return None
        text.append(piece)
        if emit is not None:
            emit((PIECE, index, piece))
    generation = pieces.result
    assert generation is not None, "an exhausted TextStream holds its Generation"
    finish = "length" if generation.finish_reason == "length" else "stop"
    new_text = "".join(text)
    logprobs = None
    if request.logprobs is not None:
        logprobs = _logprobs(run, ids, prompt_text, _kept_ids(run, generation, new_text),
                             request.logprobs, request.echo)
    if emit is not None:
        emit((FINISH, index, finish, logprobs))
    return Choice(index=index, text=(prompt_text if request.echo else "") + new_text,
                  finish_reason=finish, logprobs=logprobs,
                  completion_tokens=len(generation.ids))


def _kept_ids(run: Run, generation: Any, text: str) -> list[int]:
    """The generated ids that the text shows: not a final end-of-text token, nor the tokens
    of a stop string that begin where it begins (the text is cut before it)."""
    ids = generation.ids
    if generation.finish_reason == "eot":
        return ids[:-1]
    if generation.finish_reason == "stop":
        offsets = _char_offsets(run, ids)
        return [t for t, start in zip(ids, offsets) if start < len(text)]
    return ids


def _char_offsets(run: Run, ids: list[int]) -> list[int]:
    """Where each token's text starts, in characters of the text of `ids` (a token that
    finishes a character begun by the one before starts after that character)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    offsets, length = [], 0
    for t in ids:
        offsets.append(length)
        length += len(decoder.decode(run.tokenizer.decode_bytes([t])))
    return offsets


def _token_string(run: Run, token_id: int) -> str:
    data = run.tokenizer.decode_bytes([token_id])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:                    # part of a multi-byte character
        return "bytes:" + "".join(f"\\x{b:02x}" for b in data)


def _logprobs(run: Run, prompt_ids: list[int], prompt_text: str, new_ids: list[int], k: int,
              echo: bool) -> dict[str, list]:
    """OpenAI's legacy logprobs object for the new tokens (and the prompt's, with echo), from
    one `score_ids_with_top` over prompt + new tokens."""
    ids = prompt_ids + new_ids
    lps, top = score_ids_with_top(run.model, ids, k) if len(ids) >= 2 else ([], [])
    token_logprobs: list[float | None] = [None, *lps]        # the first token has no context
    top_logprobs: list[dict[str, float] | None] = [None] + [
        {_token_string(run, t): lp for t, lp in alternatives} for alternatives in top]
    new_offsets = _char_offsets(run, new_ids)                # from the start of the new text
    if echo:
        start, offsets = 0, (_char_offsets(run, prompt_ids)
                             + [len(prompt_text) + o for o in new_offsets])
    else:
        start, offsets = len(prompt_ids), new_offsets
    return {"tokens": [_token_string(run, t) for t in ids[start:]],
            "token_logprobs": token_logprobs[start:], "top_logprobs": top_logprobs[start:],
            "text_offset": offsets}


# --------------------------------------------------------------------------- response bodies

def completion_body(completion_id: str, created: int, model: str, choices: list[dict],
                    usage: dict[str, int] | None = None) -> dict[str, Any]:
    """A completion (or one streamed chunk of it) in OpenAI's shape."""
    body = {"id": completion_id, "object": "text_completion", "created": created,
            "model": model, "choices": choices}
    if usage is not None:
        body["usage"] = usage
    return body


def new_completion_id() -> tuple[str, int]:
    """A fresh completion id and the Unix time it was made."""
    return f"cmpl-{uuid.uuid4().hex}", int(time.time())
