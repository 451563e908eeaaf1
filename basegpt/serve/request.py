"""The fields of POST /v1/completions, and checking a request's body against them.

A request is checked field by field (every bad field is a 400 naming it, its value and the
fix), then queued on its model's worker (worker.py), which runs `basegpt.generate.stream`
once per choice, exactly as `basegpt generate` does: the same prompt, settings and seed give
the same text. The fields:

    model        a served model id (GET /v1/models); an unknown one is a 404
    prompt       text, token ids, or a list of either (one result per prompt); "" starts a
                 new document (from the end-of-text token), as in `basegpt generate`
    max_tokens   new tokens, 0 .. the server's --max-tokens (default 16, or that if less)
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
    stream       server-sent events: `data: {chunk}` per text piece, then `data: [DONE]`; with
                 logprobs, a choice's whole logprobs come in its last chunk (with its
                 finish_reason), scored over the finished text as without streaming
    stream_options   {"include_usage": true} adds a last chunk with the token counts

Tokens in `logprobs` are the token's text, or "bytes:\\xNN..." when its bytes are not valid
UTF-8 alone (part of a multi-byte character); `text_offset` is where each token starts in
`text`. A prompt longer than the model's context is fine: the window slides, as in `basegpt
generate`; the server's --max-prompt-tokens bounds how long a prompt may be. OpenAI fields
that basegpt does not implement (best_of > n, frequency/presence penalties, logit_bias,
suffix) are accepted at their neutral values and refused otherwise; any other field is a 400.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any

from basegpt.config import MAX_SEED, GenerationConfig
from basegpt.serve.errors import bad_request
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
    max_tokens = _int(body, "max_tokens", min(DEFAULT_MAX_TOKENS, limits.max_tokens), 0,
                      limits.max_tokens, " (this server's --max-tokens)")
    seed = _int(body, "seed", None, 0, MAX_SEED - (n - 1),
                " (choice i uses seed + i, which must stay below 2**63)")
    logprobs = _int(body, "logprobs", None, 0, MAX_LOGPROBS)
    options = body.get("stream_options")
    if options is not None and not (isinstance(options, dict) and set(options) <= {"include_usage"}
                                    and isinstance(options.get("include_usage", False), bool)):
        raise bad_request(f"stream_options must be an object like {{\"include_usage\": true}}, "
                          f"got {options!r}", "stream_options")
    streaming = _bool(body, "stream")
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
