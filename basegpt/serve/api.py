"""The HTTP side of the API: GET /v1/models and POST /v1/completions.

A completions request is checked field by field (request.py: every bad field is a 400 naming
it), then queued on its model's worker (worker.py), whose thread runs the job (completion.py).
The answer is one JSON body, or with "stream": true server-sent events: `data: {chunk}` for
each text piece as it is generated, a chunk with each choice's finish_reason, then
`data: [DONE]`.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from concurrent.futures import Future
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from basegpt.serve.completion import (FINISH, PIECE, completion_body, completion_job,
                                      new_completion_id)
from basegpt.serve.errors import APIError, bad_request, server_error
from basegpt.serve.limits import Limits
from basegpt.serve.request import CompletionRequest, parse_completion


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
        await asyncio.wait([asyncio.wrap_future(future)])     # never raises: job_result does
        completion = job_result(future)
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
        job_result(first[1])

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
                    yield chunk([{"index": item[1], "text": "", "logprobs": item[3],
                                  "finish_reason": item[2]}])
                elif item[0] == "end":
                    try:
                        completion = job_result(item[1])
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


def job_result(future: Future) -> Any:
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
