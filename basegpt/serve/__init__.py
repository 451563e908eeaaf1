"""`basegpt serve`: basegpt's runs behind an OpenAI-compatible HTTP API, and an explorer page.

    limits.py     what a request may ask and how many may wait (Limits)
    registry.py   which runs are served and under which model ids; loading them lazily
    worker.py     one thread and one queue per model: each request runs as it would alone
    request.py    the fields of POST /v1/completions, and checking a request against them
    completion.py answering a request on the worker: every choice through generate.stream
    api.py        GET /v1/models and POST /v1/completions over HTTP, streaming as SSE
    errors.py     every error as OpenAI-shaped JSON with a status
    explorer.py   the page's JSON endpoints: tokens, next token, attention, model, curves
    static/       the page itself (index.html, app.js, style.css): no build step, no CDN
    app.py        the Starlette app: routes, the API key, errors; the socket and uvicorn

    from basegpt.serve import Limits, Registry, bind, build_app, find_runs, make_server
    app = build_app(Registry(find_runs(["runs/laptop"])), Limits(max_tokens=256))
    make_server(app).run(sockets=[bind("127.0.0.1", 8000)])

The web stack (Starlette, uvicorn) is the optional extra `basegpt[serve]`: the names above are
imported on first use, and without the extra that raises a MissingDependency naming the
install command. The package sits on top of the library (generate, checkpoint); nothing in
basegpt imports it but the command line.
"""

from __future__ import annotations

import importlib
from typing import Any

from basegpt._optional import require

# name -> module that defines it; imported when the name is first looked up (PEP 562).
_LAZY = {"Limits": "basegpt.serve.limits", "Registry": "basegpt.serve.registry",
         "ServedRun": "basegpt.serve.registry", "find_runs": "basegpt.serve.registry",
         "bind": "basegpt.serve.app", "build_app": "basegpt.serve.app",
         "is_loopback": "basegpt.serve.app", "make_server": "basegpt.serve.app"}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'basegpt.serve' has no attribute {name!r}")
    for module in ("starlette", "uvicorn"):
        require(module, "basegpt serve", package="'basegpt[serve]'")
    return getattr(importlib.import_module(_LAZY[name]), name)
