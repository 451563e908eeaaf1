"""`basegpt serve`'s OpenAI-compatible API (basegpt/serve/), tested as a client meets it: a real
uvicorn server on 127.0.0.1 (in a thread; the command line once as a process) and the
official `openai` client. The oracle is basegpt's own generation: every answer must equal what
`generate` (and `basegpt generate`) gives for the same prompt, settings and seed, whether it
is streamed, one of n, or one of 32 clients asking at once."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import torch
from helpers import default_ctrl_c, tiny
from openai import OpenAI

from basegpt.checkpoint import WEIGHTS_FILE, load_run, save_run
from basegpt.cli import main
from basegpt.generate import generate, score_ids
from basegpt.serve import Limits, Registry, bind, build_app, find_runs, make_server

KEY = "test-key"
LIMITS = Limits(max_prompt_tokens=64, max_tokens=200, max_queue=64)


@pytest.fixture(scope="module")
def root(tokenizer, tmp_path_factory) -> Path:
    """runs/: two good tiny runs and one whose weights file is damaged."""
    root = tmp_path_factory.mktemp("runs")
    save_run(root / "tiny", tiny(tokenizer), tokenizer)
    save_run(root / "other", tiny(tokenizer, n_block=1), tokenizer)
    save_run(root / "broken", tiny(tokenizer), tokenizer)
    (root / "broken" / WEIGHTS_FILE).write_bytes(b"not a safetensors file")
    return root


@pytest.fixture(scope="module")
def run(root):
    """The tiny run as the library loads it: the oracle's model."""
    return load_run(root / "tiny")


@contextlib.contextmanager
def live_server(root: Path, limits: Limits = LIMITS, api_key: str | None = KEY):
    """A uvicorn server on a free port of 127.0.0.1, serving every run under `root`, in a
    thread; yields (base URL, registry)."""
    registry = Registry(find_runs([], root), max_queue=limits.max_queue)
    sock = bind("127.0.0.1", 0)
    server = make_server(build_app(registry, limits, api_key))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", registry
    finally:
        server.should_exit = True
        thread.join(20)
        registry.close()
        sock.close()


@pytest.fixture(scope="module")
def server(root):
    with live_server(root) as (url, registry):
        yield url


@pytest.fixture(scope="module")
def client(server) -> OpenAI:
    return OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=60)


def solo(run, prompt, **settings) -> str:
    """The oracle: what basegpt's generate writes."""
    return generate(run.model, run.tokenizer, prompt, **settings)


def http(method: str, url: str, body: bytes | None = None,
         headers: dict | None = None) -> tuple[int, dict]:
    """A raw request (for what an OpenAI client cannot send): status and JSON body."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


# ------------------------------------------------------------------------ answers

def test_models_lists_every_run_under_the_root(client):
    models = client.models.list().data
    assert [m.id for m in models] == ["broken", "other", "tiny"], models
    assert {(m.object, m.owned_by) for m in models} == {("model", "basegpt")}
    assert all(m.created > 0 for m in models), "created: when the run was made"


def test_a_completion_equals_basegpt_generate_for_the_same_seed(client, run, root, capsys):
    settings = dict(temperature=0.8, top_p=0.9, seed=3)
    # 40 new tokens: the 16-token context window slides twice, as in generate.
    answer = client.completions.create(model="tiny", prompt="First Citizen:", max_tokens=40,
                                       **settings)
    expected = solo(run, "First Citizen:", max_new_tokens=40, **settings)
    assert answer.choices[0].text == expected
    assert answer.choices[0].finish_reason == "length" and answer.model == "tiny"
    prompt_tokens = len(run.tokenizer.encode("First Citizen:"))
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (prompt_tokens, 40)
    assert main(["generate", str(root / "tiny"), "--prompt", "First Citizen:", "--device", "cpu",
                 "--max-new-tokens", "40", "--temperature", "0.8", "--top-p", "0.9",
                 "--seed", "3", "--no-stream"]) == 0
    assert capsys.readouterr().out == "First Citizen:" + expected + "\n", "= basegpt generate"
    greedy = client.completions.create(model="tiny", prompt="All:", max_tokens=12, temperature=0,
                                       extra_body={"top_k": 5, "repetition_penalty": 1.3})
    assert greedy.choices[0].text == solo(run, "All:", max_new_tokens=12, temperature=0,
                                          top_k=5, repetition_penalty=1.3)


def test_token_id_prompts_and_prompt_lists(client, run):
    ids = run.tokenizer.encode("You are all")
    by_ids = client.completions.create(model="tiny", prompt=ids, max_tokens=8, seed=1)
    assert by_ids.choices[0].text == solo(run, "You are all", max_new_tokens=8, seed=1)
    both = client.completions.create(model="tiny", prompt=["Speak", ids], n=2,
                                     max_tokens=6, seed=4)
    texts = {c.index: c.text for c in both.choices}
    assert texts == {0: solo(run, "Speak", max_new_tokens=6, seed=4),
                     1: solo(run, "Speak", max_new_tokens=6, seed=5),
                     2: solo(run, "You are all", max_new_tokens=6, seed=4),
                     3: solo(run, "You are all", max_new_tokens=6, seed=5)}, \
        "choice j of prompt p has index p * n + j and seed + j"
    empty = client.completions.create(model="tiny", prompt="", max_tokens=5, temperature=0)
    assert empty.choices[0].text == solo(run, "", max_new_tokens=5, temperature=0), \
        '"" starts a new document, as in generate'


def test_n_samples_with_a_seed_are_distinct_and_reproducible(client, run):
    first = client.completions.create(model="tiny", prompt="First", n=3, max_tokens=20, seed=7)
    texts = [c.text for c in sorted(first.choices, key=lambda c: c.index)]
    assert texts == [solo(run, "First", max_new_tokens=20, seed=7 + i) for i in range(3)], \
        "choice i is sampled with seed + i (basegpt generate --num-samples --seed)"
    assert len(set(texts)) == 3, texts
    again = client.completions.create(model="tiny", prompt="First", n=3, max_tokens=20, seed=7)
    assert [c.text for c in sorted(again.choices, key=lambda c: c.index)] == texts


def test_stop_strings_cut_the_text_as_generate_does(client, run):
    free = solo(run, "Before we", max_new_tokens=30, temperature=0)
    stop = free[8:10]                               # two characters the model will write
    answer = client.completions.create(model="tiny", prompt="Before we", max_tokens=30,
                                       temperature=0, stop=[stop, "\u2603"])
    text = answer.choices[0].text
    assert text == free[:free.index(stop)] == solo(run, "Before we", max_new_tokens=30,
                                                    temperature=0, stop=[stop, "\u2603"])
    assert answer.choices[0].finish_reason == "stop"


def test_echo_puts_the_prompt_first(client, run):
    answer = client.completions.create(model="tiny", prompt="hear me", max_tokens=6, seed=2,
                                       echo=True)
    assert answer.choices[0].text == "hear me" + solo(run, "hear me", max_new_tokens=6, seed=2)
    default = client.completions.create(model="tiny", prompt="hear me", temperature=0)
    assert default.usage.completion_tokens == 16, "OpenAI's default max_tokens"
    only = client.completions.create(model="tiny", prompt="hear me", max_tokens=0, echo=True)
    assert only.choices[0].text == "hear me" and only.usage.completion_tokens == 0


def test_streamed_text_equals_the_whole_answer(client):
    for kw in (dict(seed=5, max_tokens=30), dict(temperature=0, max_tokens=30, stop=["e"]),
               dict(seed=6, max_tokens=10, n=2, echo=True, logprobs=3),
               dict(seed=7, max_tokens=12, logprobs=0, stop=["e"])):
        whole = client.completions.create(model="tiny", prompt="All: Speak", **kw)
        pieces: dict[int, list[str]] = {}
        finish, logprobs, usage = {}, {}, None
        for chunk in client.completions.create(model="tiny", prompt="All: Speak", stream=True,
                                               stream_options={"include_usage": True}, **kw):
            for c in chunk.choices:
                pieces.setdefault(c.index, []).append(c.text)
                if c.finish_reason:
                    finish[c.index] = c.finish_reason
                if c.logprobs is not None:
                    assert c.finish_reason, "a choice's logprobs come whole in its last chunk"
                    logprobs[c.index] = c.logprobs
            usage = chunk.usage or usage
        assert {i: "".join(p) for i, p in pieces.items()} == \
            {c.index: c.text for c in whole.choices}, kw
        assert finish == {c.index: c.finish_reason for c in whole.choices}, kw
        if "logprobs" in kw:
            assert logprobs == {c.index: c.logprobs for c in whole.choices}, kw
            assert all(len(lp.tokens) > 0 for lp in logprobs.values())
        else:
            assert logprobs == {}, "no logprobs unless asked"
        assert usage == whole.usage, "the last chunk holds the usage"
        if "seed" in kw and kw["max_tokens"] == 30:
            assert len(pieces[0]) > 5, "streamed in pieces, not at once"


def test_logprobs_are_the_models_and_list_the_most_likely_tokens(client, run):
    prompt = "First Citizen: Before"
    answer = client.completions.create(model="tiny", prompt=prompt, max_tokens=6, seed=9,
                                       logprobs=3, echo=True)
    choice = answer.choices[0]
    lp = choice.logprobs
    prompt_ids = run.tokenizer.encode(prompt)
    new = generate(run.model, run.tokenizer, prompt, max_new_tokens=6, seed=9,
                   return_logprobs=True)
    ids = prompt_ids + new.ids
    assert choice.text == prompt + new.text
    assert len(lp.tokens) == len(ids) and lp.token_logprobs[0] is None, "echo: every token"
    expected = score_ids(run.model, ids)
    torch.testing.assert_close(torch.tensor(lp.token_logprobs[1:]), torch.tensor(expected))
    torch.testing.assert_close(torch.tensor(lp.token_logprobs[len(prompt_ids):]),
                               torch.tensor(new.logprobs), msg="= generate's own logprobs")
    assert len(ids) <= run.model.config.n_context, "one window: one forward is the oracle"
    with torch.no_grad():
        logp = torch.log_softmax(run.model(torch.tensor([ids[:-1]]))[0].float(), dim=-1)
    for t in range(1, len(ids)):                        # logp[t - 1] predicts ids[t]
        top = torch.topk(logp[t - 1], 3)
        want = {run.tokenizer.decode_bytes([i]): v for i, v in
                zip(top.indices.tolist(), top.values.tolist())}
        got = lp.top_logprobs[t]
        assert len(got) == 3, got
        for token, value in got.items():
            data = (bytes.fromhex(token[6:].replace("\\x", "")) if token.startswith("bytes:")
                    else token.encode())
            assert data in want, f"position {t}: {token!r} is not among the 3 most likely"
            assert value == pytest.approx(want[data], abs=1e-4)
        assert lp.token_logprobs[t] <= max(got.values()) + 1e-6
    assert lp.text_offset[len(prompt_ids)] == len(prompt), "offsets count from the prompt's start"
    assert lp.text_offset == sorted(lp.text_offset)
    plain = client.completions.create(model="tiny", prompt=prompt, max_tokens=6, seed=9,
                                      logprobs=0)
    assert plain.choices[0].logprobs.token_logprobs == lp.token_logprobs[len(prompt_ids):]
    assert plain.choices[0].logprobs.text_offset[0] == 0, "without echo, from the new text"
    assert plain.choices[0].logprobs.top_logprobs == [{}] * 6


def test_32_concurrent_clients_each_get_their_solo_answer(server, run):
    jobs = [(f"Speak {i}", dict(seed=i, max_tokens=12 + i % 5, temperature=0.5 + i % 3 / 4))
            for i in range(32)]
    expected = [solo(run, prompt, max_new_tokens=kw["max_tokens"], seed=kw["seed"],
                     temperature=kw["temperature"]) for prompt, kw in jobs]
    start = threading.Barrier(32)

    def ask(job):
        prompt, kw = job
        with OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=60) as own:
            start.wait()
            if kw["seed"] % 2:                          # half of them streamed
                return "".join(c.choices[0].text for c in own.completions.create(
                    model="tiny", prompt=prompt, stream=True, **kw) if c.choices)
            return own.completions.create(model="tiny", prompt=prompt, **kw).choices[0].text

    began = time.monotonic()
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(ask, jobs, timeout=120))
    assert answers == expected
    assert time.monotonic() - began < 120


# ------------------------------------------------------------------------ errors

BAD = [  # (request fields, status, exception, message part, param)
    (dict(model="nope"), 404, openai.NotFoundError,
     "model 'nope' is not served here; the models are: broken, other, tiny", "model"),
    (dict(prompt=[1] * 65), 400, openai.BadRequestError,
     "prompt is 65 tokens, more than this server takes (--max-prompt-tokens 64)", "prompt"),
    (dict(max_tokens=201), 400, openai.BadRequestError,
     "max_tokens=201 is out of range: it must be in 0..200 (this server's --max-tokens)",
     "max_tokens"),
    (dict(max_tokens=-1), 400, openai.BadRequestError, "max_tokens=-1 is out of range", "max_tokens"),
    (dict(max_tokens="10"), 400, openai.BadRequestError,
     "max_tokens must be an integer, got a string '10'", "max_tokens"),
    (dict(temperature=-1), 400, openai.BadRequestError,
     "temperature=-1: must be a finite number >= 0", "temperature"),
    (dict(temperature="hot"), 400, openai.BadRequestError, "temperature='hot'", "temperature"),
    (dict(top_p=0), 400, openai.BadRequestError, "top_p=0: must be in (0, 1]", "top_p"),
    (dict(top_p=1.5), 400, openai.BadRequestError, "top_p=1.5: must be in (0, 1]", "top_p"),
    (dict(n=0), 400, openai.BadRequestError, "n=0 is out of range: it must be in 1..128", "n"),
    (dict(n=1.5), 400, openai.BadRequestError, "n must be an integer, got a number 1.5", "n"),
    (dict(seed=-1), 400, openai.BadRequestError, "seed=-1 is out of range", "seed"),
    (dict(logprobs=21), 400, openai.BadRequestError, "logprobs=21 is out of range", "logprobs"),
    (dict(stop=[""]), 400, openai.BadRequestError, "stop holds an empty string", "stop"),
    (dict(stop=3), 400, openai.BadRequestError, "stop must be a string or an array of strings",
     "stop"),
    (dict(echo="yes"), 400, openai.BadRequestError, "echo must be true or false", "echo"),
    (dict(prompt=[]), 400, openai.BadRequestError, "got an empty array", "prompt"),
    (dict(prompt=[[1, "a"]]), 400, openai.BadRequestError, "got an array holding an array",
     "prompt"),
    (dict(prompt=[5000]), 400, openai.BadRequestError,
     "prompt holds token id 5000, out of range: this model's ids are 0..319", "prompt"),
    (dict(frequency_penalty=0.5), 400, openai.BadRequestError,
     "frequency_penalty=0.5 is not supported", "frequency_penalty"),
    (dict(best_of=3), 400, openai.BadRequestError, "best_of=3 is not supported", "best_of"),
    (dict(extra_body={"temprature": 1}), 400, openai.BadRequestError,
     "unknown field 'temprature'; did you mean 'temperature'?", "temprature"),
]


@pytest.mark.parametrize("fields, status, error, message, param", BAD,
                         ids=[str(row[0])[:40] for row in BAD])
def test_each_bad_field_is_a_4xx_naming_it(client, fields, status, error, message, param):
    with pytest.raises(error) as caught:
        client.completions.create(**{**dict(model="tiny", prompt="Hi", max_tokens=4), **fields})
    assert caught.value.status_code == status
    assert message in caught.value.body["message"], caught.value.body
    assert caught.value.body["param"] == param
    assert caught.value.body["type"] == "invalid_request_error"


def test_bad_json_wrong_routes_and_methods_get_the_error_shape(server):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    status, body = http("POST", f"{server}/v1/completions", b"{not json", headers)
    assert status == 400 and "the request body is not valid JSON" in body["error"]["message"]
    status, body = http("POST", f"{server}/v1/completions", b"[1, 2]", headers)
    assert status == 400 and "must be a JSON object, got an array" in body["error"]["message"]
    status, body = http("POST", f"{server}/v1/completions", b'{"model": "tiny"}', headers)
    assert (status, body["error"]["param"]) == (400, "prompt"), body
    assert body["error"]["message"].startswith("prompt is required")
    status, body = http("GET", f"{server}/v1/completions", headers=headers)
    assert status == 405 and "GET is not allowed on /v1/completions" in body["error"]["message"]
    status, body = http("GET", f"{server}/v1/chat", headers=headers)
    assert status == 404 and set(body["error"]) == {"message", "type", "param", "code"}


def test_the_api_key_is_required_on_v1_but_not_on_health(server):
    with pytest.raises(openai.AuthenticationError) as caught:
        OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0).models.list()
    assert caught.value.status_code == 401
    assert caught.value.body["message"].startswith("the API key is wrong")
    status, body = http("GET", f"{server}/v1/models")
    assert status == 401 and body["error"]["message"].startswith("no API key was given")
    assert body["error"]["code"] == "invalid_api_key"
    status, body = http("GET", f"{server}/health")
    assert status == 200 and body["status"] == "ok", body


def test_a_broken_run_is_an_error_naming_it_and_the_server_stays_up(client, server, root):
    for _ in range(2):                                  # tried again, still failing
        with pytest.raises(openai.InternalServerError) as caught:
            client.completions.create(model="broken", prompt="Hi", max_tokens=2)
        message = caught.value.body["message"]
        assert message.startswith(f"model 'broken' could not be loaded from {root / 'broken'}:")
        assert "the other models are still served" in message
        assert caught.value.body["code"] == "model_load_failed"
    assert client.completions.create(model="tiny", prompt="Hi", max_tokens=2).choices
    status, body = http("GET", f"{server}/health")
    assert body["models"]["broken"]["status"] == "failed"
    assert body["models"]["tiny"] == {"status": "ready", "pending": 0}


def test_a_full_queue_is_a_429_and_the_waiting_request_still_gets_its_answer(root, run):
    with live_server(root, Limits(max_queue=2), api_key=None) as (url, registry):
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
        gate = threading.Event()
        registry.workers["tiny"].submit(lambda run: gate.wait(60))   # the model is busy
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(client.completions.create, model="tiny", prompt="All",
                                  max_tokens=5, seed=1)
            deadline = time.monotonic() + 20
            while http("GET", f"{url}/health")[1]["models"]["tiny"]["pending"] < 2:
                assert time.monotonic() < deadline, "the request was never queued"
                time.sleep(0.01)
            with pytest.raises(openai.RateLimitError) as caught:
                client.completions.create(model="tiny", prompt="All", max_tokens=5)
            assert caught.value.status_code == 429
            assert caught.value.body["message"] == (
                "model 'tiny' has 2 requests queued, the most this server takes "
                "(--max-queue 2); retry later")
            assert client.completions.create(model="other", prompt="All", max_tokens=2), \
                "each model has its own queue"
            gate.set()
            assert waiting.result(60).choices[0].text == solo(run, "All", max_new_tokens=5,
                                                              seed=1)


def test_max_tokens_defaults_to_16_or_the_servers_limit_if_lower(root, run):
    with live_server(root, Limits(max_tokens=8), api_key=None) as (url, _):
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
        answer = client.completions.create(model="tiny", prompt="Hi", temperature=0)
        assert answer.choices[0].text == solo(run, "Hi", max_new_tokens=8, temperature=0)
        assert answer.usage.completion_tokens == 8


def test_a_client_that_leaves_a_stream_stops_its_generation(root, monkeypatch):
    with live_server(root, Limits(max_tokens=100_000), api_key=None) as (url, registry):
        worker, jobs = registry.workers["tiny"], []
        submit = worker.submit
        monkeypatch.setattr(worker, "submit", lambda job: jobs.append(submit(job)) or jobs[-1])
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
        # Greedy: this model falls into a loop of five tokens without an end-of-text, so
        # only the client leaving can end the job before its 100,000 tokens.
        events = client.completions.create(model="tiny", prompt="Hi", max_tokens=100_000,
                                           stream=True, temperature=0)
        assert next(iter(events)).choices[0].text, "the stream has begun"
        events.close()
        # A job that ran to its end returns the Completion; a stopped one returns None.
        assert jobs[0].result(timeout=60) is None, "the generation was not stopped"


# ------------------------------------------------------------------------ which runs, ids

def test_run_ids_are_folder_names_and_paths_where_names_collide(tokenizer, tmp_path):
    model = tiny(tokenizer)
    for folder in ("a/run", "b/run", "solo", "solo/best"):
        save_run(tmp_path / folder, model, tokenizer)
    found = find_runs([], tmp_path)
    assert [(r.id, r.path) for r in found] == [
        ("a/run", tmp_path / "a/run"), ("b/run", tmp_path / "b/run"), ("solo", tmp_path / "solo")], \
        "names that collide get their path under the root; a run's own subfolders are not runs"
    given = find_runs([tmp_path / "solo", tmp_path / "a/run", tmp_path / "a/run"])
    assert [r.id for r in given] == ["run", "solo"], "the same run given twice is served once"


# ------------------------------------------------------------------------ the command

def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, f"one line on stderr, got: {err}"
    return err[0]


def test_command_line_errors_are_one_line(root, tmp_path, capsys, monkeypatch):
    assert main(["serve", str(root / "tiny"), "--host", "0.0.0.0"]) == 2
    assert one_error_line(capsys).startswith(
        "basegpt: error: --host 0.0.0.0 can be reached from other machines; add --allow-remote")
    assert main(["serve", str(tmp_path / "nope")]) == 2
    assert one_error_line(capsys) == (f"basegpt: error: {tmp_path / 'nope'}: no such run "
                                      "directory; give the folder of a trained run (e.g. "
                                      "runs/laptop)")
    assert main(["serve", "--runs-root", str(tmp_path)]) == 2
    assert one_error_line(capsys).startswith(f"basegpt: error: no runs under {tmp_path}:")
    assert main(["serve", str(root / "tiny"), "--max-tokens", "0"]) == 2
    assert one_error_line(capsys) == ("basegpt: error: max_tokens=0 (--max-tokens): must be an "
                                      "integer >= 1")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(root / "tiny"), "--port", str(port)]) == 2
        assert one_error_line(capsys) == (f"basegpt: error: port {port} on 127.0.0.1 is in use "
                                          "by another program; choose another --port (0 = any "
                                          "free one)")
    monkeypatch.setitem(sys.modules, "starlette", None)           # import starlette fails
    assert main(["serve", str(root / "tiny")]) == 2
    assert one_error_line(capsys) == ("basegpt: error: basegpt serve needs 'basegpt[serve]': "
                                      "pip install 'basegpt[serve]'")


@pytest.mark.slow
def test_the_command_serves_until_interrupted(root, run):
    """`basegpt serve` as a process: --allow-remote warns, the printed address answers, and
    Ctrl-C stops it with the usual exit code."""
    # One thread, as this test process computes the oracle with.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "basegpt", "serve", str(root / "tiny"), str(root / "other"),
         "--host", "0.0.0.0", "--allow-remote", "--port", "0", "--device", "cpu"],
        stderr=subprocess.PIPE, text=True, env=env, preexec_fn=default_ctrl_c)
    try:
        warning = process.stderr.readline()
        assert warning.startswith("basegpt: warning: serving on 0.0.0.0: anyone who can reach "
                                  "this machine can use the models; no --api-key is set"), warning
        line = process.stderr.readline()
        found = re.search(r"serving 2 models \(other, tiny\): the page at http://0\.0\.0\.0:(\d+)/ , "
                          r"the API at http://0\.0\.0\.0:\1/v1", line)
        assert found, line
        client = OpenAI(base_url=f"http://127.0.0.1:{found.group(1)}/v1", api_key="none",
                        max_retries=0, timeout=60)
        assert [m.id for m in client.models.list().data] == ["other", "tiny"]
        text = client.completions.create(model="tiny", prompt="Hi", max_tokens=5, seed=0)
        assert text.choices[0].text == solo(run, "Hi", max_new_tokens=5, seed=0)
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 130
        assert process.stderr.read().strip().endswith("basegpt: interrupted")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
