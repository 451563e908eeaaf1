"""`basegpt serve` against transformers' text-generation pipeline behind the same web stack:
requests/s, generated tokens/s and first-token latency at 1, 8 and 32 concurrent clients, CPU.

The model: the laptop preset's shape (4 pre-norm RMSNorm blocks x 128, 4 heads of 32, SwiGLU FF
341, RoPE, no biases, tied head, context 128) with a 2048-token BPE trained on 1 MB of the
built-in corpus, and random weights (every matrix redrawn with std --init-std, wider than
training's 0.02 so greedy text is varied rather than one token repeated). Or --run RUN_DIR for
a trained run of a Llama-exportable shape. basegpt's own export (`basegpt.interop.hf.
export_llama`, what `basegpt export RUN --format llama OUT` runs) writes the same weights as a
Hugging Face folder, which transformers loads as LlamaForCausalLM + PreTrainedTokenizerFast.

The two servers, each its own process on 127.0.0.1, both with --threads torch threads
(OMP_NUM_THREADS, and torch.set_num_threads in B), both Starlette served by uvicorn:

    A  `basegpt serve RUN` exactly as a user starts it: one worker thread and queue per model,
       requests answered one at a time, each streamed token by token as it is generated.
    B  `python benchmarks/bench_serve.py --hf-server HF_DIR`: the Starlette app below, the way
       a straightforward user writes it. One `pipeline("text-generation", model=HF_DIR)` and
       one threading.Lock, since a pipeline is not meant to be called from several threads
       at once (so B also answers one request at a time, as A does). A plain request runs
       `pipe(prompt, max_new_tokens=..., do_sample=False, return_tensors=True)` in Starlette's
       thread pool; a streamed one runs the same call with a TextIteratorStreamer on a thread
       of its own and sends the streamer's pieces as server-sent events (that streamer holds
       text back to the next space or newline, so a piece may be a few tokens). Token counts
       come from the returned ids. Same request and event shapes as A's /v1/completions
       (prompt, max_tokens, temperature, stream, stream_options.include_usage).

The clients: the official `openai` package (AsyncOpenAI), in this process. For each number of
clients C, C clients run at once, each sending --requests streamed completions one after
another: the fixed prompt, --max-tokens new tokens, temperature 0. Measured per level, over
the whole level's wall time: requests/s, generated tokens/s (the usage chunk's
completion_tokens, summed), and per request the time to the first chunk with text (median
and 90th percentile). The servers take turns at every level, in alternating order (A then B,
then B then A), after one warm-up request each; the warm-up is a plain (not streamed) request
whose text is compared between the two (same weights, greedy: it should be the same).

With --page it also times the explorer page's requests on server A, one client, one after
another: POST /explorer/tokens, /explorer/next (k 10) and /explorer/attention (layer 0) of the
start of the built-in corpus cut to at most n_context - 8 tokens.

    pip install 'basegpt[serve]' transformers openai
    python benchmarks/bench_serve.py                      # ~3 min on a 2-core machine
    python benchmarks/bench_serve.py --quick              # smoke run, well under a minute
    python benchmarks/bench_serve.py --clients 1 8 32 --requests 8 --max-tokens 64 --threads 1
    python benchmarks/bench_serve.py --page --json serve.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

PROMPT = "def greet(name):\n    \"\"\"Say hello to someone by name.\"\"\"\n    return f'Hello, {name}!'\n"
VOCAB = 2048                    # the laptop preset's vocabulary
CORPUS_BYTES = 1_000_000        # what the benchmark's tokenizer trains on
HF_MODEL_ID = "hf"              # the model id server B answers to
START_TIMEOUT_S = 120           # a server that has not printed its port by then is broken


# --------------------------------------------------------------------------- the model

def build_model(work: Path, init_std: float, seed: int) -> Path:
    """A laptop-shaped run with random weights under `work`; returns its run directory."""
    from basegpt import B2lM, Tokenizer
    from basegpt.checkpoint import save_run
    from basegpt.config import ModelConfig
    from basegpt.corpus import builtin_corpus
    from basegpt.recipe import load_preset

    tokenizer = Tokenizer(vocab_size=VOCAB).train(list(builtin_corpus(CORPUS_BYTES)),
                                                  progress=False)
    config = ModelConfig(**load_preset("laptop")["model"], vocab_size=len(tokenizer))
    torch.manual_seed(seed)
    model = B2lM(config).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:                          # matrices; norms stay 1
                p.copy_(torch.randn(p.shape, generator=g) * init_std)
    return save_run(work / "laptop", model, tokenizer)


def prompt_tokens(run_dir: Path) -> tuple[int, int]:
    """The prompt's length in tokens and the model's context, read from the run."""
    from basegpt.checkpoint import load_run
    from basegpt.generate import encode_prompt
    run = load_run(run_dir)
    return len(encode_prompt(run.tokenizer, PROMPT, run.model)), run.model.config.n_context


# --------------------------------------------------------------------------- server B

def hf_app(hf_dir: str) -> Any:
    """Server B (module docstring): POST /v1/completions on a transformers pipeline."""
    import transformers
    from starlette.applications import Starlette
    from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route
    from transformers import TextIteratorStreamer, pipeline

    transformers.logging.set_verbosity_error()
    pipe = pipeline("text-generation", model=hf_dir, device="cpu", dtype=torch.float32)
    lock = threading.Lock()

    def generate(prompt: str, max_tokens: int, temperature: float,
                 streamer: Any = None) -> tuple[str, int, int]:
        """(new text, prompt tokens, new tokens) of one request, one request at a time."""
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else \
            {"do_sample": False}
        with lock:
            out = pipe(prompt, max_new_tokens=max_tokens, return_tensors=True,
                       streamer=streamer, **sampling)
        ids = out[0]["generated_token_ids"]                  # the prompt's, then the new ones
        n_prompt = len(pipe.tokenizer(prompt)["input_ids"])
        return pipe.tokenizer.decode(ids[n_prompt:], skip_special_tokens=True), n_prompt, \
            len(ids) - n_prompt

    def body(choices: list[dict], usage: dict | None = None) -> dict:
        answer = {"id": "cmpl-hf", "object": "text_completion", "created": int(time.time()),
                  "model": HF_MODEL_ID, "choices": choices}
        return answer | ({"usage": usage} if usage else {})

    def event(choices: list[dict], usage: dict | None = None) -> str:
        return f"data: {json.dumps(body(choices, usage))}\n\n"

    def usage(n_prompt: int, n_new: int) -> dict:
        return {"prompt_tokens": n_prompt, "completion_tokens": n_new,
                "total_tokens": n_prompt + n_new}

    async def completions(request: Request) -> Any:
        req = await request.json()
        prompt, max_tokens = req["prompt"], int(req.get("max_tokens", 16))
        temperature = float(req.get("temperature", 1.0))
        if not req.get("stream"):
            text, n_prompt, n_new = await run_in_threadpool(generate, prompt, max_tokens,
                                                            temperature)
            finish = "length" if n_new == max_tokens else "stop"
            return JSONResponse(body([{"index": 0, "text": text, "logprobs": None,
                                       "finish_reason": finish}], usage(n_prompt, n_new)))
        streamer = TextIteratorStreamer(pipe.tokenizer, skip_prompt=True,
                                        skip_special_tokens=True)
        result: dict[str, Any] = {}

        def work() -> None:
            try:
                result["answer"] = generate(prompt, max_tokens, temperature, streamer)
            except Exception:
                streamer.end()                            # the loop below must not wait forever
                raise

        thread = threading.Thread(target=work, daemon=True)
        thread.start()

        async def events() -> Any:
            async for piece in iterate_in_threadpool(streamer):
                if piece:
                    yield event([{"index": 0, "text": piece, "logprobs": None,
                                  "finish_reason": None}])
            await run_in_threadpool(thread.join)
            _, n_prompt, n_new = result["answer"]
            finish = "length" if n_new == max_tokens else "stop"
            yield event([{"index": 0, "text": "", "logprobs": None, "finish_reason": finish}])
            if (req.get("stream_options") or {}).get("include_usage"):
                yield event([], usage(n_prompt, n_new))
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/completions", completions, methods=["POST"])])


def serve_hf(hf_dir: str, threads: int) -> None:
    """Run server B on a free port of 127.0.0.1 and print the port, as `basegpt serve` does."""
    import uvicorn
    torch.set_num_threads(threads)
    app = hf_app(hf_dir)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(f"serving {HF_MODEL_ID} at http://127.0.0.1:{sock.getsockname()[1]}/v1",
          file=sys.stderr, flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off")).run(sockets=[sock])


# --------------------------------------------------------------------------- both servers

@contextlib.contextmanager
def server(command: list[str], threads: int, log: Path) -> Iterator[str]:
    """Start `command` (a server printing http://127.0.0.1:PORT on stderr) with `threads`
    torch threads; yields its base URL, stops it after."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    with open(log, "w") as err:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, env=env)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (found := re.search(r"http://127\.0\.0\.1:(\d+)", log.read_text())):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{' '.join(command)} did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{found.group(1)}"
    finally:
        process.terminate()
        process.wait(timeout=30)


@dataclass
class Level:
    """One server at one number of clients."""

    server: str
    clients: int
    requests: int
    seconds: float
    tokens: int
    requests_per_s: float
    tokens_per_s: float
    first_token_median_ms: float
    first_token_p90_ms: float
    request_median_s: float


def percentile(values: list[float], q: float) -> float:
    """The q-quantile of `values`, interpolated between the two nearest (numpy's default)."""
    ordered = sorted(values)
    at = (len(ordered) - 1) * q
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


async def timed_request(client: Any, model: str, max_tokens: int) -> tuple[float, float, int]:
    """One streamed greedy completion: (seconds to the first text, seconds in all, tokens)."""
    start = time.perf_counter()
    first, tokens = None, 0
    stream = await client.completions.create(model=model, prompt=PROMPT, max_tokens=max_tokens,
                                             temperature=0, stream=True,
                                             stream_options={"include_usage": True})
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].text:
            first = time.perf_counter() - start
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    total = time.perf_counter() - start
    if first is None:
        raise RuntimeError(f"{model}: a streamed answer held no text")
    return first, total, tokens


async def run_level(name: str, url: str, model: str, clients: int, requests: int,
                    max_tokens: int) -> Level:
    """`clients` clients at once, each sending `requests` requests one after another."""
    from openai import AsyncOpenAI
    async with AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0,
                           timeout=600) as client:
        async def one_client() -> list[tuple[float, float, int]]:
            return [await timed_request(client, model, max_tokens) for _ in range(requests)]

        start = time.perf_counter()
        results = [r for rs in await asyncio.gather(*[one_client() for _ in range(clients)])
                   for r in rs]
        seconds = time.perf_counter() - start
    firsts = [r[0] for r in results]
    tokens = sum(r[2] for r in results)
    return Level(server=name, clients=clients, requests=len(results), seconds=seconds,
                 tokens=tokens, requests_per_s=len(results) / seconds,
                 tokens_per_s=tokens / seconds,
                 first_token_median_ms=1000 * statistics.median(firsts),
                 first_token_p90_ms=1000 * percentile(firsts, 0.9),
                 request_median_s=statistics.median(r[1] for r in results))


async def warm_up(url: str, model: str, max_tokens: int) -> str:
    """One plain (not streamed) greedy request; its text. Loads A's model, warms B's."""
    from openai import AsyncOpenAI
    async with AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0,
                           timeout=600) as client:
        answer = await client.completions.create(model=model, prompt=PROMPT,
                                                 max_tokens=max_tokens, temperature=0)
    return answer.choices[0].text


# --------------------------------------------------------------------------- the page

def page_text(run_dir: Path, n_tokens: int) -> tuple[str, int]:
    """The start of the built-in corpus cut to at most `n_tokens` tokens of the run's BPE,
    and its length in tokens."""
    from basegpt.checkpoint import load_run
    from basegpt.corpus import builtin_corpus
    tokenizer = load_run(run_dir).tokenizer
    text = next(iter(builtin_corpus(20_000)))
    while len(tokenizer.encode(text)) > n_tokens:
        text = text[:int(len(text) * 0.9)]
    return text, len(tokenizer.encode(text))


def time_page(url: str, model: str, text: str, repeats: int) -> list[dict[str, Any]]:
    """Median and p90 milliseconds of each explorer request, one at a time on one connection,
    after one warm-up each."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    requests = [("tokens", "/explorer/tokens", {"model": model, "text": text}),
                ("next token, k 10", "/explorer/next", {"model": model, "text": text, "k": 10}),
                ("attention, layer 0", "/explorer/attention",
                 {"model": model, "text": text, "layer": 0})]
    rows = []
    for name, path, body in requests:
        payload = json.dumps(body).encode()
        times, size = [], 0
        for i in range(repeats + 1):
            start = time.perf_counter()
            connection.request("POST", path, payload, {"Content-Type": "application/json"})
            response = connection.getresponse()
            data = response.read()
            if response.status != 200:
                raise RuntimeError(f"{path}: HTTP {response.status}: {data[:300]!r}")
            if i:                                        # the first is the warm-up
                times.append(1000 * (time.perf_counter() - start))
            size = len(data)
        rows.append({"request": name, "median_ms": statistics.median(times),
                     "p90_ms": percentile(times, 0.9), "answer_bytes": size})
    connection.close()
    return rows


# --------------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32],
                        help="numbers of concurrent clients (default 1 8 32)")
    parser.add_argument("--requests", type=int, default=8,
                        help="streamed requests each client sends (default 8)")
    parser.add_argument("--max-tokens", type=int, default=64,
                        help="new tokens a request asks for (default 64)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of each server (default 1: the clients and the "
                             "servers' event loops get the other core of a 2-core machine)")
    parser.add_argument("--run", type=Path, help="a trained Llama-exportable run to serve "
                        "(default: a laptop-shaped model with random weights)")
    parser.add_argument("--init-std", type=float, default=0.1,
                        help="std of the random weights (default 0.1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--page", action="store_true",
                        help="also time the explorer page's requests on basegpt serve")
    parser.add_argument("--page-repeats", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 and 4 clients, 2 requests each, 16 tokens")
    parser.add_argument("--hf-server", metavar="HF_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hf_server:
        serve_hf(args.hf_server, args.threads)
        return
    if args.quick:
        args.clients, args.requests, args.max_tokens, args.page_repeats = [1, 4], 2, 16, 3

    from basegpt.interop.hf import export_llama
    import openai
    import starlette
    import transformers
    import uvicorn

    print(f"# bench_serve: {platform.processor() or platform.machine()}, {os.cpu_count()} "
          f"CPUs, Python {platform.python_version()}, torch {torch.__version__}, transformers "
          f"{transformers.__version__}, starlette {starlette.__version__}, uvicorn "
          f"{uvicorn.__version__}, openai {openai.__version__}, commit {_commit()}")
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        work = Path(tmp)
        run_dir = args.run or build_model(work, args.init_std, args.seed)
        hf_dir = export_llama(run_dir, work / "hf")
        n_prompt, n_context = prompt_tokens(run_dir)
        if n_prompt + args.max_tokens > n_context:
            raise SystemExit(f"--max-tokens {args.max_tokens}: the prompt's {n_prompt} tokens "
                             f"and the new ones must fit the context of {n_context}")
        print(f"# model: {run_dir if args.run else 'laptop preset shape, random weights'}; "
              f"prompt {n_prompt} tokens, {args.max_tokens} new, greedy; {args.threads} torch "
              f"thread(s) per server; clients {args.clients} x {args.requests} requests")
        base_id = Path(run_dir).name
        commands = {
            "basegpt serve": ([sys.executable, "-m", "basegpt", "serve", str(run_dir),
                               "--port", "0", "--device", "cpu"], base_id),
            "transformers pipeline": ([sys.executable, str(Path(__file__).resolve()),
                                       "--hf-server", str(hf_dir), "--threads",
                                       str(args.threads)], HF_MODEL_ID)}
        with contextlib.ExitStack() as stack:
            urls = {name: stack.enter_context(server(command, args.threads,
                                                     work / f"{model}.log"))
                    for name, (command, model) in commands.items()}
            texts = {name: asyncio.run(warm_up(urls[name], commands[name][1], args.max_tokens))
                     for name in commands}
            same = len(set(texts.values())) == 1
            print(f"# warm-up greedy text identical on both servers: {'yes' if same else 'NO'} "
                  f"({texts['basegpt serve'][:40]!r}...)")
            levels = []
            for i, clients in enumerate(args.clients):
                order = list(commands) if i % 2 == 0 else list(commands)[::-1]
                for name in order:
                    level = asyncio.run(run_level(name, urls[name], commands[name][1], clients,
                                                  args.requests, args.max_tokens))
                    print(f"#   {name}, {clients} clients: {level.requests_per_s:.1f} req/s",
                          flush=True)
                    levels.append(level)
            page = []
            if args.page:
                text, n_page = page_text(Path(run_dir), n_context - 8)
                page = time_page(urls["basegpt serve"], base_id, text, args.page_repeats)
                for row in page:
                    row["text_tokens"] = n_page
    print_tables(levels, page, args)
    if args.json:
        args.json.write_text(json.dumps({"commit": _commit(), "same_text": same,
                                         "levels": [asdict(l) for l in levels],
                                         "page": page}, indent=2) + "\n")


def print_tables(levels: list[Level], page: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print()
    print("| server | clients | requests | requests/s | tokens/s | first token median (ms) "
          "| first token p90 (ms) | request median (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for level in sorted(levels, key=lambda l: (l.clients, l.server)):
        print(f"| {level.server} | {level.clients} | {level.requests} | "
              f"{level.requests_per_s:.1f} | {level.tokens_per_s:,.0f} | "
              f"{level.first_token_median_ms:.0f} | {level.first_token_p90_ms:.0f} | "
              f"{level.request_median_s:.2f} |")
    if page:
        print()
        print(f"Explorer requests on basegpt serve, one at a time ({args.page_repeats} each), "
              f"a text of {page[0]['text_tokens']} tokens:")
        print()
        print("| request | median (ms) | p90 (ms) | answer bytes |")
        print("|---|---:|---:|---:|")
        for row in page:
            print(f"| {row['request']} | {row['median_ms']:.1f} | {row['p90_ms']:.1f} | "
                  f"{row['answer_bytes']:,} |")


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    main()
