"""`basegpt serve`: runs behind an OpenAI-compatible HTTP API and an explorer page
(basegpt/serve/)."""

from __future__ import annotations

import argparse
from pathlib import Path

from basegpt.cli._common import _log


def _add_serve(sub: argparse._SubParsersAction) -> None:
    from basegpt.serve.limits import Limits             # no web stack needed to parse flags
    limits = Limits()
    p = sub.add_parser(
        "serve", help="serve runs over HTTP: an explorer page and an OpenAI-compatible API",
        description="Serve runs' models over HTTP: an explorer page at / (tokens, next-token "
                    "probabilities, generation, attention, the model, training curves), and "
                    "GET /health, GET /v1/models, POST "
                    "/v1/completions (OpenAI's completions API: text or token-id prompts, "
                    "sampling controls, n, stop, seed, logprobs, echo, streaming). Each model "
                    "answers one request at a time; the rest wait in its queue. A model's id "
                    "is its run folder's name (its path where two share a name). Needs the "
                    "extra: pip install 'basegpt[serve]'. See docs/serve.md.",
        epilog="examples:\n  basegpt serve                            # every run under runs/\n"
               "  basegpt serve runs/laptop --port 8080\n"
               "  basegpt serve --runs-root experiments --api-key s3cret\n"
               "  basegpt serve runs/laptop --host 0.0.0.0 --allow-remote --api-key s3cret",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="*", type=Path, metavar="RUN_DIR",
                   help="runs to serve (default: every run under --runs-root)")
    p.add_argument("--runs-root", type=Path, metavar="FOLDER",  default=Path("runs"),
                   help="with no RUN_DIR, serve every run under this folder (default runs)")
    p.add_argument("--host", metavar="HOST",  default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a --host that other machines can reach (e.g. 0.0.0.0)")
    p.add_argument("--port", type=int, metavar="PORT",  default=8000,
                   help="port to listen on (default 8000; 0 = any free port, printed)")
    p.add_argument("--api-key", metavar="KEY",  default=None,
                   help="require `Authorization: Bearer KEY` on /v1/ requests")
    p.add_argument("--max-prompt-tokens", type=int, metavar="N",  default=limits.max_prompt_tokens,
                   help=f"longest prompt a request may send, in tokens (default "
                        f"{limits.max_prompt_tokens})")
    p.add_argument("--max-tokens", type=int, metavar="N",  default=limits.max_tokens,
                   help=f"most new tokens a request may ask for (default {limits.max_tokens})")
    p.add_argument("--max-queue", type=int, metavar="N",  default=limits.max_queue,
                   help=f"requests one model holds, running or waiting; more get 429 "
                        f"(default {limits.max_queue})")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (default auto)")
    p.set_defaults(run=_run_serve)


def _run_serve(args: argparse.Namespace) -> None:
    from basegpt.serve.limits import Limits
    limits = Limits(args.max_prompt_tokens, args.max_tokens, args.max_queue)   # checks them
    if args.api_key is not None and not args.api_key.strip():
        raise ValueError("--api-key is empty; give a key, or leave the flag out to serve "
                         "without one")
    from basegpt.serve import Registry, bind, build_app, find_runs, is_loopback, make_server
    if not is_loopback(args.host) and not args.allow_remote:
        raise ValueError(f"--host {args.host} can be reached from other machines; add "
                         "--allow-remote if that is what you want (with --api-key), or use "
                         "--host 127.0.0.1")
    from basegpt.devices import pick_device
    device = pick_device(args.device)
    runs = find_runs(args.run_dirs, args.runs_root)
    sock = bind(args.host, args.port)              # before anything is printed: a busy port
    host, port = sock.getsockname()[:2]
    if not is_loopback(args.host):
        _log(f"basegpt: warning: serving on {args.host}: anyone who can reach this machine can "
             "use the models" + ("" if args.api_key else "; no --api-key is set"))
    registry = Registry(runs, device=device, max_queue=limits.max_queue)
    app = build_app(registry, limits, args.api_key)
    shown = f"[{host}]" if ":" in host else host
    _log(f"basegpt: serving {len(runs)} model{'s' if len(runs) != 1 else ''} "
         f"({', '.join(run.id for run in runs)}): the page at http://{shown}:{port}/ , the "
         f"API at http://{shown}:{port}/v1 ; Ctrl-C stops")
    try:
        make_server(app).run(sockets=[sock])
    finally:
        registry.close()
        sock.close()
