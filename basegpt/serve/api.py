"""POST /v1/completions: OpenAI's completions API on basegpt's own generation.

A request is checked field by field (every bad field is a 400 naming it, its value and the
fix), then queued on its model's worker (worker.py), which runs `basegpt.generate.stream`
once per choice, exactly as `basegpt generate` does: the same prompt, settings and seed give
the same text. The fields:

    model        a served model id (GET /v1/models); an unknown one is a 404
    prompt       text, token ids, or a list of either (one result per prompt); "" starts a
                 new document (from the end-of-text token), as in `basegpt generate`
    max_tokens   new tokens, 0 .. the server's --max-tokens (default 16)
    temperature, top_p          as in `basegpt generate` (0 = greedy); and basegpt's
    top_k, min_p, repetition_penalty    other sampling controls, which clients pass as
                                        extra fields (llama.cpp and vLLM take them too)
    n            choices per prompt; choice i is sampled with seed + i (`basegpt generate
                 --num-samples n --seed S` gives the same n texts); choice j of prompt p has
                 index p * n + j
    stop         a string or a list of strings: the text ends before the first one
    seed         0 .. 2**63 - n; none = a fresh random seed per choice
    logprobs     k = 0..20: per token its log-probability under the model (before temperature
                 and filters, as `score_ids` gives it), and the k most likely tokens there
    echo         the prompt comes first in `text` (and in logprobs, its first token with null)
    stream       server-sent events: `data: {chunk}` per text piece, then `data: [DONE]`
    stream_options   {"include_usage": true} adds a last chunk with the token counts

Tokens in `logprobs` are the token's text, or "bytes:\\xNN..." when its bytes are not valid
UTF-8 alone (part of a multi-byte character); `text_offset` is where each token starts in
`text`. A prompt longer than the model's context is fine: the window slides, as in `basegpt
generate`; the server's --max-prompt-tokens bounds how long a prompt may be. OpenAI fields
that basegpt does not implement (best_of > n, frequency/presence penalties, logit_bias,
suffix) are accepted at their neutral values and refused otherwise; any other field is a 400.
"""

from __future__ import annotations

import asyncio
import codecs
import dataclasses
import difflib
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from basegpt.checkpoint import Run
from basegpt.config import MAX_SEED, GenerationConfig
from basegpt.generate import encode_prompt, score_ids_with_top, stream
from basegpt.serve.errors import APIError, bad_request, server_error
from basegpt.serve.limits import Limits

MAX_N = 128                    # choices per prompt, as OpenAI allows
MAX_LOGPROBS = 20              # alternatives per token; OpenAI's legacy API allows 5
DEFAULT_MAX_TOKENS = 16        # OpenAI's default for the completions API

# Fields basegpt does not implement, accepted at the value that means "off".
NEUTRAL = {"frequency_penalty": (0, "basegpt has repetition_penalty instead"),
           "presence_penalty": (0, "basegpt has repetition_penalty instead"),
           "logit_bias": ({}, "basegpt does not bias logits"),
           "suffix": ("", "basegpt models continue text, they do not fill gaps")}
FIELDS = {"model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "min_p",
          "repetition_penalty", "n", "stop", "seed", "logprobs", "echo", "stream",
          "stream_options", "best_of", "user", *NEUTRAL}


@dataclass(frozen=True)
class CompletionRequest:
    """A checked completions request; `config` holds the generation settings (its seed is
    choice 0's)."""

    model: str
    prompts: list[str | list[int]]
    config: GenerationConfig
    n: int
    logprobs: int | None
    echo: bool
    stream: bool
    include_usage: bool

    def choice_config(self, i: int) -> GenerationConfig:
        """The settings of choice i of a prompt: seed + i (module docstring)."""
        seed = self.config.seed
        return self.config if seed is None else dataclasses.replace(self.config, seed=seed + i)


# --------------------------------------------------------------------------- checking a request

def _kind(value: Any) -> str:
    """A JSON value's type as a message names it."""
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "an array", dict: "an object", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def _int(body: dict, name: str, default: int | None, low: int, high: int, why: str = "") -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"{name} must be an integer, got {_kind(value)} {value!r}", name)
    if not low <= value <= high:
        raise bad_request(f"{name}={value} is out of range: it must be in {low}..{high}{why}", name)
    return value


def _bool(body: dict, name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad_request(f"{name} must be true or false, got {_kind(value)} {value!r}", name)
    return value


def _prompts(body: dict) -> list[str | list[int]]:
    """The prompt field as a list of prompts: each a str or a list of token ids."""
    prompt = body.get("prompt")
    shapes = "a string, an array of token ids, or an array of either"
    if prompt is None:
        raise bad_request(f"prompt is required: {shapes} (\"\" starts a new document)", "prompt")
    if isinstance(prompt, str):
        return [prompt]
    if not isinstance(prompt, list) or not prompt:
        got = "an empty array" if prompt == [] else f"{_kind(prompt)} {prompt!r}"
        raise bad_request(f"prompt must be {shapes}, got {got}", "prompt")
    if all(_is_id(t) for t in prompt):
        return [prompt]
    for p in prompt:
        if not (isinstance(p, str) or (isinstance(p, list) and p and all(map(_is_id, p)))):
            raise bad_request(f"prompt must be {shapes}, got an array holding {_kind(p)} "
                              f"{p!r}; token ids are non-negative integers, and an array of "
                              "them is not empty", "prompt")
    return list(prompt)


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _stop(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    items = [stop] if isinstance(stop, str) else stop
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise bad_request(f"stop must be a string or an array of strings, got {_kind(stop)} "
                          f"{stop!r}", "stop")
    if "" in items:
        raise bad_request("stop holds an empty string, which would stop before the first "
                          "token; remove it", "stop")
    return tuple(items)


def parse_completion(body: Any, limits: Limits) -> CompletionRequest:
    """Check a decoded JSON body field by field; a 400 APIError names the first bad field."""
    if not isinstance(body, dict):
        raise bad_request(f"the request body must be a JSON object, got {_kind(body)}")
    for name in body:
        if name not in FIELDS:
            near = difflib.get_close_matches(name, sorted(FIELDS), n=1)
            raise bad_request(f"unknown field {name!r}" + (f"; did you mean {near[0]!r}?" if near
                              else f"; the fields are: {', '.join(sorted(FIELDS))}"), name)
    for name, (neutral, why) in NEUTRAL.items():
        if body.get(name) not in (None, neutral):
            raise bad_request(f"{name}={body[name]!r} is not supported ({why}); leave it out "
                              f"or give {neutral!r}", name)
    model = body.get("model")
    if not isinstance(model, str):
        raise bad_request(f"model must be a string, the id of a served model (GET /v1/models), "
                          f"got {_kind(model)} {model!r}", "model")
    prompts = _prompts(body)
    n = _int(body, "n", 1, 1, MAX_N)
    best_of = _int(body, "best_of", n, 1, MAX_N)
    if best_of != n:
        raise bad_request(f"best_of={best_of} is not supported (basegpt returns every sample, "
                          "it does not rank them); leave it out or set it to n", "best_of")
    max_tokens = _int(body, "max_tokens", DEFAULT_MAX_TOKENS, 0, limits.max_tokens,
                      " (this server's --max-tokens)")
    seed = _int(body, "seed", None, 0, MAX_SEED - (n - 1),
                " (choice i uses seed + i, which must stay below 2**63)")
    logprobs = _int(body, "logprobs", None, 0, MAX_LOGPROBS)
    options = body.get("stream_options")
    if options is not None and not (isinstance(options, dict) and set(options) <= {"include_usage"}
                                    and isinstance(options.get("include_usage", False), bool)):
        raise bad_request(f"stream_options must be an object like {{\"include_usage\": true}}, "
                          f"got {options!r}", "stream_options")
    streaming = _bool(body, "stream")
    if streaming and logprobs is not None:
        raise bad_request("logprobs with stream is not supported yet; ask without stream to "
                          "get logprobs", "logprobs")
    if options is not None and not streaming:
        raise bad_request("stream_options needs stream: true", "stream_options")
    sampling = {name: body.get(name) for name in
                ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")}
    try:
        # GenerationConfig checks the sampling controls' types and ranges (one home for them);
        # its messages start with the field's name, which is also the request's.
        config = GenerationConfig(max_new_tokens=max_tokens, stop=_stop(body), seed=seed,
                                  **sampling)
    except (ValueError, TypeError) as error:
        message = str(error)
        param = next((name for name in sampling if message.startswith(name)), None)
        raise bad_request(message, param) from None
    return CompletionRequest(model=model, prompts=prompts, config=config, n=n, logprobs=logprobs,
                             echo=_bool(body, "echo"), stream=streaming,
                             include_usage=bool(options and options.get("include_usage")))


# --------------------------------------------------------------------------- answering it

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
# (PIECE, index, text) and (FINISH, index, finish_reason).
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
    if emit is not None:
        emit((FINISH, index, finish))
    new_text = "".join(text)
    logprobs = None
    if request.logprobs is not None:
        logprobs = _logprobs(run, ids, prompt_text, _kept_ids(run, generation, new_text),
                             request.logprobs, request.echo)
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


# --------------------------------------------------------------------------- the endpoints

async def list_models(request: Request) -> JSONResponse:
    """GET /v1/models: one entry per served run, in OpenAI's list shape."""
    registry = request.app.state.registry
    return JSONResponse({"object": "list", "data": [
        {"id": run.id, "object": "model", "created": run.created, "owned_by": "basegpt"}
        for run in registry.runs.values()]})


async def create_completion(request: Request) -> Response:
    """POST /v1/completions (module docstring)."""
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise bad_request(f"the request body is not valid JSON ({error}); send one JSON object "
                          "with Content-Type: application/json") from None
    limits: Limits = request.app.state.limits
    completion_request = parse_completion(body, limits)
    worker = request.app.state.registry.get(completion_request.model)
    completion_id, created = new_completion_id()
    if not completion_request.stream:
        future = worker.submit(completion_job(completion_request, limits))
        await asyncio.wait([asyncio.wrap_future(future)])     # never raises: _result does
        completion = _result(future)
        return JSONResponse(completion_body(
            completion_id, created, completion_request.model,
            [c.to_json() for c in completion.choices], completion.usage))
    return await _stream(worker, completion_request, limits, completion_id, created)


async def _stream(worker: Any, request: CompletionRequest, limits: Limits, completion_id: str,
                  created: int) -> Response:
    """The streamed answer: the job's pieces as server-sent events. The response starts only
    once the job has checked the prompts, so a bad prompt or a run that cannot be loaded is
    still a plain HTTP error, not an event in a 200 stream."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    cancelled = threading.Event()

    def emit(item: tuple) -> None:                    # called on the worker's thread
        loop.call_soon_threadsafe(events.put_nowait, item)

    future = worker.submit(completion_job(request, limits, emit, cancelled))
    future.add_done_callback(lambda f: emit(("end", f)))
    first = await events.get()
    if first[0] == "end":                             # failed (or was dropped) before starting
        _result(first[1])

    def chunk(choices: list[dict], usage: dict | None = None) -> str:
        body = completion_body(completion_id, created, request.model, choices, usage)
        return f"data: {json.dumps(body)}\n\n"

    async def sse() -> AsyncIterator[str]:
        try:
            while True:
                item = await events.get()
                if item[0] == PIECE:
                    yield chunk([{"index": item[1], "text": item[2], "logprobs": None,
                                  "finish_reason": None}])
                elif item[0] == FINISH:
                    yield chunk([{"index": item[1], "text": "", "logprobs": None,
                                  "finish_reason": item[2]}])
                elif item[0] == "end":
                    try:
                        completion = _result(item[1])
                    except Exception as error:            # the headers are sent: an event
                        failure = error if isinstance(error, APIError) else server_error(error)
                        yield f"data: {json.dumps(failure.body)}\n\n"
                        return
                    if request.include_usage:
                        yield chunk([], completion.usage)
                    yield "data: [DONE]\n\n"
                    return
        finally:
            cancelled.set()                           # the client left: stop generating

    return StreamingResponse(sse(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


def _result(future: Future) -> Any:
    """A finished job's result; its failure as an APIError (a bug's as a 500, logged)."""
    if future.cancelled():
        raise APIError(503, "the server is shutting down; the request was not run",
                       code="shutting_down")
    error = future.exception()
    if error is None:
        return future.result()
    if isinstance(error, APIError):
        raise error
    if isinstance(error, (ValueError, TypeError)):       # the request's, found by the library
        raise bad_request(str(error)) from error
    raise error
