"""The web app of `basegpt serve`: its routes, the API key check, every error as OpenAI-shaped
JSON, and a socket to serve it on.

    registry = Registry(find_runs([], "runs"))
    app = build_app(registry, Limits(max_tokens=512), api_key="secret")
    server = make_server(app)
    server.run(sockets=[bind("127.0.0.1", 8000)])

Routes:

    GET  /health            {"status": "ok", "models": {id: {"status", "pending"}}}; no key needed
    GET  /v1/models         the served runs (api.py)
    POST /v1/completions    OpenAI's completions API on basegpt's generation (api.py)
    GET  /                  the explorer page (static/index.html, its script and style)
    /explorer/...           the page's JSON endpoints: tokens, next token, attention, the
                            model, the training curves (explorer.py)

The app is Starlette's (an ASGI app) served by uvicorn. Each group of routes is its own module
that reads what it needs from `app.state` (registry, limits), so another face of the server
(a page of static files and its JSON endpoints) is one more module whose routes are added here.
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import socket
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from basegpt.serve.api import create_completion, list_models
from basegpt.serve.errors import APIError
from basegpt.serve.explorer import ROUTES as EXPLORER_ROUTES
from basegpt.serve.limits import Limits
from basegpt.serve.registry import Registry

# What --api-key guards: the API and the page's endpoints. /health stays open for probes, and
# the page's static files too (they hold no data; the page asks for the key on a 401).
PROTECTED_PREFIXES = ("/v1/", "/explorer/")
STATIC = Path(__file__).parent / "static"


def build_app(registry: Registry, limits: Limits | None = None,
              api_key: str | None = None) -> Starlette:
    """The ASGI app serving `registry`'s runs. With `api_key`, every /v1/ request must carry
    `Authorization: Bearer <api_key>` (401 otherwise)."""
    routes = [Route("/health", health),
              Route("/v1/models", list_models),
              Route("/v1/completions", create_completion, methods=["POST"]),
              *EXPLORER_ROUTES,
              Route("/", page),
              Mount("/static", StaticFiles(directory=STATIC), name="static")]
    app = Starlette(routes=routes, exception_handlers={
        APIError: _api_error, HTTPException: _http_error, Exception: _unexpected_error})
    app.state.registry = registry
    app.state.limits = limits or Limits()
    return BearerKey(app, api_key) if api_key else app


async def health(request: Request) -> JSONResponse:
    """Whether the server answers, and per model: loaded or not, and its pending requests."""
    workers = request.app.state.registry.workers
    return JSONResponse({"status": "ok", "models": {
        model_id: {"status": w.status, "pending": w.pending} for model_id, w in workers.items()}})


async def page(request: Request) -> FileResponse:
    """GET /: the explorer page (its script and style are under /static/)."""
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def _api_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, APIError)
    return JSONResponse(error.body, status_code=error.status)


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    """Starlette's own errors (no such route, wrong method) in the same shape."""
    assert isinstance(error, HTTPException)
    what = {404: f"there is no {request.url.path} here; the API is under /v1/ (GET /v1/models, "
                 "POST /v1/completions)",
            405: f"{request.method} is not allowed on {request.url.path}"}
    message = what.get(error.status_code, str(error.detail))
    return JSONResponse(APIError(error.status_code, message).body, status_code=error.status_code)


async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
    """A bug: uvicorn logs the traceback; the client gets a JSON 500."""
    body = APIError(500, f"the server failed: {type(error).__name__}: {error}; this is a bug in "
                         "basegpt (the server's log has the traceback)",
                    code="internal_error").body
    return JSONResponse(body, status_code=500)


class BearerKey:
    """ASGI middleware: a /v1/ request without `Authorization: Bearer <key>` gets a 401.
    Compared in constant time, so response times do not leak how much of a guess was right."""

    def __init__(self, app: Any, key: str) -> None:
        self.app, self.key = app, key.encode()

    @property
    def state(self) -> Any:
        return self.app.state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PROTECTED_PREFIXES):
            headers = dict(scope["headers"])
            given = headers.get(b"authorization", b"")
            scheme, _, token = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
                problem = "no API key was given" if not given else "the API key is wrong"
                error = APIError(401, f"{problem}; send the server's --api-key as "
                                      "`Authorization: Bearer KEY` (OpenAI clients: api_key=KEY)",
                                 code="invalid_api_key")
                await JSONResponse(error.body, status_code=401)(scope, receive, send)
                return
        await self.app(scope, receive, send)


# --------------------------------------------------------------------------- serving

def is_loopback(host: str) -> bool:
    """Whether `host` is reachable only from this machine (localhost, 127.x.x.x, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:                                 # a host name: assume it is reachable
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free port, read it from getsockname()).
    A port in use or an address not of this machine is a ValueError that says what to do."""
    if not 0 <= port <= 65535:
        raise ValueError(f"--port {port}: must be in 0..65535 (0 = any free port)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as error:
        raise ValueError(f"--host {host}: not a host name or address this machine knows "
                         f"({error.strerror}); e.g. --host 127.0.0.1") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise ValueError(f"port {port} on {host} is in use by another program; choose "
                             "another --port (0 = any free one)") from None
        if error.errno == errno.EADDRNOTAVAIL:
            raise ValueError(f"--host {host} is not an address of this machine; e.g. --host "
                             "127.0.0.1") from None
        raise
    sock.listen(128)
    return sock


def make_server(app: Any, log_level: str = "warning") -> uvicorn.Server:
    """A uvicorn server for `app`; run it with `.run(sockets=[bind(host, port)])`, stop it
    with `.should_exit = True` (or Ctrl-C)."""
    # Open streams get a few seconds to finish when the server stops, then are cut.
    config = uvicorn.Config(app, log_level=log_level, lifespan="off", timeout_graceful_shutdown=5)
    return uvicorn.Server(config)
