"""The explorer page's JSON endpoints: what the model does with a text, step by step.

    POST /explorer/tokens      {model, text, mode: "bpe" | "bytes"} -> the text's tokens: id,
                               bytes, display text, and for a merged token the merge (its two
                               parent ids) that built it; bytes per token
    POST /explorer/next        {model, text, temperature, top_k, top_p, min_p,
                               repetition_penalty, k} -> the k most likely next tokens with
                               their probability under those controls (what sampling draws
                               from) and under the model alone
    POST /explorer/attention   {model, text, layer?} -> every layer's (or one layer's)
                               attention weights per head and their mean over heads
    GET  /explorer/model?model=ID     the run's architecture and parameters per component
    GET  /explorer/metrics?model=ID   the run's metrics.jsonl records (training curves)

Each answer is computed by the library, never again here: tokens by the run's tokenizer, the
next-token distribution by `basegpt.sampling.process_logits` (the function generation
samples through, so the bars are the probabilities a sampled token is drawn with), attention
by `basegpt.insight.attention_maps` (the manual kernel, as `basegpt attention` draws it), the
model table by `basegpt.insight.run_info` (as `basegpt info` prints it) and the curves by
`basegpt.train_state.read_metrics`. Jobs that use the model go through its worker's queue
(worker.py), like completions, so the model is used by one thread at a time; the run's files
(its config and metrics, which a `basegpt train` may still be writing) are read on a thread
of their own, so the curves answer even while the model is busy.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import torch
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from basegpt.checkpoint import Run
from basegpt.config import SamplingSettings
from basegpt.generate import encode_prompt, sliding_keep
from basegpt.insight import attention_maps, run_info
from basegpt.sampling import process_logits
from basegpt.serve.api import job_result
from basegpt.serve.errors import APIError, bad_request
from basegpt.serve.registry import Registry
from basegpt.train_state import read_metrics

MAX_TEXT_CHARS = 20_000        # the text a tokens/next request may send: a page, not a book
MAX_TOP = 50                   # next tokens one request may list
ATTENTION_DECIMALS = 6         # weights are sent rounded: 1e-6 is finer than any colour shows
SAMPLING = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty")


# --------------------------------------------------------------------------- jobs (the library)

def token_table(run: Run, text: str, mode: str = "bpe") -> dict[str, Any]:
    """The tokens of `text`: with mode "bpe" the run's tokenizer's, with "bytes" one token per
    UTF-8 byte (ids 0..255, the tokenizer's first 256 tokens, before any merge).

        {"ids": [...], "tokens": [{"id", "text", "bytes": [int], "parents": [a, b] | None,
                                   "parent_texts": [text of a, text of b] | None}],
         "n_bytes", "n_tokens", "bytes_per_token"}

    `parents` is the merge that made a merged token: merge i joins parents (a, b) into id
    256 + i, so decoding a, then b, gives the token's bytes."""
    tokenizer = run.tokenizer
    ids = list(text.encode("utf-8")) if mode == "bytes" else tokenizer.encode(text)
    merges = tokenizer.merges
    tokens = []
    for i in ids:
        parents = list(merges[i - 256]) if 256 <= i < 256 + len(merges) else None
        tokens.append({"id": i, "text": tokenizer.token_text(i),
                       "bytes": list(tokenizer.decode_bytes([i])), "parents": parents,
                       "parent_texts": parents and [tokenizer.token_text(p) for p in parents]})
    n_bytes = len(text.encode("utf-8"))
    return {"mode": mode, "ids": ids, "tokens": tokens, "n_bytes": n_bytes, "n_tokens": len(ids),
            "bytes_per_token": n_bytes / len(ids) if ids else None}


@torch.inference_mode()
def next_tokens(run: Run, text: str, settings: SamplingSettings, k: int = 10) -> dict[str, Any]:
    """The next-token distribution after `text`, as generation's first step sees it.

    The context is the text's tokens ("" = the end-of-text token, a new document), or where
    they overflow n_context, their last sliding_keep(n_context), as generation slides its
    window. The model's logits z at the last position become the sampling distribution
    p = softmax(process_logits(z)) (for greedy settings: all mass on the argmax); each of
    the k most likely tokens under p comes with p ("prob") and softmax(z) ("model_prob").
    `kept` counts the tokens left with p > 0 after top-k, top-p and min-p, of `vocab_size`."""
    model, tokenizer = run.model, run.tokenizer
    ids = encode_prompt(tokenizer, text, model)
    T = model.config.n_context
    window = ids if len(ids) <= T else ids[-sliding_keep(T):]
    device = model.tok_emb.weight.device
    logits = model(torch.tensor([window], device=device), logits_for="last")[:, -1].float()  # (1, V)
    seen = None
    if settings.repetition_penalty != 1.0:
        seen = torch.zeros_like(logits, dtype=torch.bool)                   # (1, V)
        seen[0, ids] = True                       # the whole prompt counts as seen, as in generate
    processed = process_logits(logits, settings, seen)[0]                   # (V,)
    if settings.greedy:
        probs = torch.zeros_like(processed)
        probs[processed.argmax()] = 1.0
    else:
        probs = torch.softmax(processed, dim=-1)
    model_probs = torch.softmax(logits[0], dim=-1)
    kept = int((probs > 0).sum())
    # The kept tokens by p; then, if fewer than k are kept, the filtered-out ones by the
    # model's own probability (so the bars show what the filters removed).
    order = torch.topk(probs, min(k, kept)).indices.tolist()
    if len(order) < k:
        removed = model_probs.masked_fill(probs > 0, -1.0)
        order += torch.topk(removed, min(k, len(probs)) - len(order)).indices.tolist()
    return {"context_tokens": len(ids), "window_tokens": len(window),
            "greedy": settings.greedy, "kept": kept, "vocab_size": len(probs),
            "top": [{"id": i, "text": tokenizer.token_text(i), "prob": probs[i].item(),
                     "model_prob": model_probs[i].item()} for i in order]}


def attention_table(run: Run, text: str, layer: int | None = None) -> dict[str, Any]:
    """`insight.attention_maps` of `text` as JSON: per layer, each head's (T, T) weights
    (row t: how much the token at t takes from each token s <= t; s > t is exactly 0, the
    causal mask) and their mean over heads, rounded to ATTENTION_DECIMALS. With `layer`,
    only that layer is sent (the others are null), to keep a long text's answer small."""
    tokens, maps = attention_maps(run.model, run.tokenizer, text)
    n_layer = len(maps)
    if layer is not None and not 0 <= layer < n_layer:
        raise bad_request(f"layer={layer} does not exist: the model has {n_layer} layer(s), "
                          f"0..{n_layer - 1}", "layer")

    def rounded(weights: torch.Tensor) -> list:
        return weights.double().round(decimals=ATTENTION_DECIMALS).tolist()

    layers = [None if layer not in (None, l) else
              {"heads": rounded(w), "mean": rounded(w.double().mean(dim=0))}
              for l, w in enumerate(maps)]
    return {"tokens": tokens, "ids": run.tokenizer.encode(text), "layers": layers,
            "n_heads": [w.shape[0] for w in maps]}


# --------------------------------------------------------------------------- HTTP

async def _body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise bad_request(f"the request body is not valid JSON ({error}); send one JSON object "
                          "with Content-Type: application/json") from None
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    return body


def _text(body: dict[str, Any]) -> str:
    text = body.get("text")
    if not isinstance(text, str):
        raise bad_request(f"text must be a string, got {text!r}", "text")
    if len(text) > MAX_TEXT_CHARS:
        raise bad_request(f"text is {len(text):,} characters, more than the explorer takes "
                          f"({MAX_TEXT_CHARS:,}); shorten it", "text")
    return text


def _int(body: dict[str, Any], name: str, default: int | None, low: int, high: int) -> int | None:
    value = body.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise bad_request(f"{name} must be an integer in {low}..{high}, got {value!r}", name)
    return value


async def _on_worker(request: Request, model_id: Any, job: Any) -> JSONResponse:
    """Run `job(run)` on the model's worker (its queue) and answer its result as JSON."""
    registry: Registry = request.app.state.registry
    future = registry.get(model_id).submit(job)
    await asyncio.wait([asyncio.wrap_future(future)])
    return JSONResponse(job_result(future))


async def tokens_endpoint(request: Request) -> JSONResponse:
    """POST /explorer/tokens (module docstring)."""
    body = await _body(request)
    text, mode = _text(body), body.get("mode", "bpe")
    if mode not in ("bpe", "bytes"):
        raise bad_request(f"mode must be \"bpe\" (the run's tokenizer) or \"bytes\" (raw "
                          f"UTF-8 bytes), got {mode!r}", "mode")
    return await _on_worker(request, body.get("model"), lambda run: token_table(run, text, mode))


async def next_endpoint(request: Request) -> JSONResponse:
    """POST /explorer/next (module docstring)."""
    body = await _body(request)
    text, k = _text(body), _int(body, "k", 10, 1, MAX_TOP)
    try:
        settings = SamplingSettings(**{name: body.get(name) for name in SAMPLING})
    except (ValueError, TypeError) as error:
        message = str(error)
        raise bad_request(message, next((n for n in SAMPLING if message.startswith(n)), None)) \
            from None
    return await _on_worker(request, body.get("model"),
                            lambda run: next_tokens(run, text, settings, k))


async def attention_endpoint(request: Request) -> JSONResponse:
    """POST /explorer/attention (module docstring)."""
    body = await _body(request)
    text, layer = _text(body), _int(body, "layer", None, 0, 10_000)
    return await _on_worker(request, body.get("model"),
                            lambda run: attention_table(run, text, layer))


async def _run_files(request: Request, read: Any) -> JSONResponse:
    """`read(path)` of the asked run's folder, on a thread; a damaged file is a 500 naming it."""
    registry: Registry = request.app.state.registry
    model_id = request.query_params.get("model")
    registry.get(model_id)                                   # a 404 for an unknown id
    path = registry.runs[model_id].path
    try:
        return JSONResponse(await run_in_threadpool(read, path))
    except (OSError, ValueError) as error:
        raise APIError(500, f"model {model_id!r}: cannot read {path}: {error}",
                       code="run_unreadable") from None


async def model_endpoint(request: Request) -> JSONResponse:
    """GET /explorer/model?model=ID: `basegpt info`'s facts about the run."""
    return await _run_files(request, run_info)


async def metrics_endpoint(request: Request) -> JSONResponse:
    """GET /explorer/metrics?model=ID: {"records": metrics.jsonl's records}, re-read on every
    request, so a page polling it follows a training run as it writes."""
    return await _run_files(request, lambda path: {"records": read_metrics(path)})


ROUTES = [Route("/explorer/tokens", tokens_endpoint, methods=["POST"]),
          Route("/explorer/next", next_endpoint, methods=["POST"]),
          Route("/explorer/attention", attention_endpoint, methods=["POST"]),
          Route("/explorer/model", model_endpoint),
          Route("/explorer/metrics", metrics_endpoint)]
