"""The explorer page's JSON endpoints (basegpt/serve/explorer.py) on a live server, each held
to the library function it must equal: the tokenizer (tokens round-trip to the text; a merged
token's parents are the merge that made it), the model's own logits through
`process_logits` (the next-token bars), `insight.attention_maps` (the heatmaps),
`insight.run_info` (the model table) and metrics.jsonl (the curves, re-read while it grows)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import torch
from helpers import tiny
from test_serve_api import http, live_server

from basegpt.serve import Limits

from basegpt.checkpoint import load_run, save_run
from basegpt.config import SamplingSettings
from basegpt.generate import generate
from basegpt.insight import attention_maps, run_info
from basegpt.sampling import process_logits

TEXT = "First Citizen: Speak, café!"


@pytest.fixture(scope="module")
def root(tokenizer, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    save_run(root / "tiny", tiny(tokenizer), tokenizer)
    return root


@pytest.fixture(scope="module")
def run(root):
    return load_run(root / "tiny")


@pytest.fixture(scope="module")
def server(root):
    with live_server(root, api_key=None) as (url, registry):
        yield url


def post(server: str, path: str, **body) -> tuple[int, dict]:
    return http("POST", server + path, json.dumps(body).encode(),
                {"Content-Type": "application/json"})


def test_tokens_round_trip_and_name_the_merge_that_made_each(server, run):
    status, answer = post(server, "/explorer/tokens", model="tiny", text=TEXT)
    assert status == 200, answer
    ids = run.tokenizer.encode(TEXT)
    assert answer["ids"] == ids and [t["id"] for t in answer["tokens"]] == ids
    assert b"".join(bytes(t["bytes"]) for t in answer["tokens"]) == TEXT.encode("utf-8")
    merged = [t for t in answer["tokens"] if t["id"] >= 256]
    assert merged, "the tiny tokenizer merges some of TEXT"
    for t in answer["tokens"]:
        if t["id"] < 256:
            assert t["parents"] is None and t["parent_texts"] is None, t
        else:
            a, b = t["parents"]
            assert run.tokenizer.merges[t["id"] - 256] == (a, b)
            assert t["parent_texts"] == [run.tokenizer.token_text(a), run.tokenizer.token_text(b)]
            assert run.tokenizer.decode_bytes([a, b]) == bytes(t["bytes"]), "a then b = the token"
    n_bytes = len(TEXT.encode("utf-8"))
    assert (answer["n_bytes"], answer["n_tokens"]) == (n_bytes, len(ids))
    assert answer["bytes_per_token"] == pytest.approx(n_bytes / len(ids))
    assert len(ids) < n_bytes, "merges make fewer tokens than bytes"

    status, raw = post(server, "/explorer/tokens", model="tiny", text=TEXT, mode="bytes")
    assert status == 200, raw
    assert raw["ids"] == list(TEXT.encode("utf-8")) and raw["bytes_per_token"] == 1.0
    assert all(t["parents"] is None and t["bytes"] == [t["id"]] for t in raw["tokens"])
    assert raw["tokens"][-2]["text"] == "\\xa9", "half a character shows as its byte"


def test_next_token_bars_are_softmax_of_the_processed_logits(server, run):
    ids = run.tokenizer.encode(TEXT)
    with torch.no_grad():
        logits = run.model(torch.tensor([ids]))[:, -1]                        # (1, V)
    for controls in ({}, {"temperature": 0.7, "top_k": 20, "top_p": 0.9},
                     {"temperature": 0.5, "min_p": 0.8, "repetition_penalty": 1.5}):
        status, answer = post(server, "/explorer/next", model="tiny", text=TEXT, k=8, **controls)
        assert status == 200, answer
        settings = SamplingSettings(**controls)
        seen = torch.zeros_like(logits, dtype=torch.bool)
        seen[0, ids] = True
        expected = torch.softmax(process_logits(logits, settings, seen), dim=-1)[0]
        top = answer["top"]
        assert [t["id"] for t in top] == expected.topk(8).indices.tolist(), controls
        for t in top:
            assert t["prob"] == pytest.approx(expected[t["id"]].item(), abs=1e-6), controls
            assert t["model_prob"] == pytest.approx(
                torch.softmax(logits[0], -1)[t["id"]].item(), abs=1e-6)
            assert t["text"] == run.tokenizer.token_text(t["id"])
        assert answer["kept"] == int((expected > 0).sum()), controls
        assert answer["vocab_size"] == len(run.tokenizer)
    assert answer["kept"] < len(run.tokenizer), "min_p removed some tokens"

    status, greedy = post(server, "/explorer/next", model="tiny", text=TEXT, temperature=0, k=3)
    assert status == 200 and greedy["greedy"] and greedy["kept"] == 1, greedy
    first = greedy["top"][0]
    assert first["prob"] == 1.0 and [t["prob"] for t in greedy["top"][1:]] == [0.0, 0.0]
    assert run.tokenizer.decode([first["id"]]) == generate(
        run.model, run.tokenizer, TEXT, max_new_tokens=1, temperature=0), "greedy = generation's"


def test_next_token_of_a_text_longer_than_the_context_slides_like_generation(server, run):
    text = TEXT * 4
    status, answer = post(server, "/explorer/next", model="tiny", text=text, temperature=0)
    assert status == 200, answer
    assert answer["context_tokens"] == len(run.tokenizer.encode(text)) > 16
    assert answer["window_tokens"] == 12, "3/4 of n_context 16, as generate slides"
    expected = generate(run.model, run.tokenizer, text, max_new_tokens=1, temperature=0)
    assert run.tokenizer.decode([answer["top"][0]["id"]]) == expected


def test_attention_equals_insight_rows_sum_to_one_and_the_mask_is_zero(server, run):
    status, answer = post(server, "/explorer/attention", model="tiny", text=TEXT)
    assert status == 200, answer
    tokens, maps = attention_maps(run.model, run.tokenizer, TEXT)
    assert answer["tokens"] == tokens and answer["n_heads"] == [2, 2]
    T = len(tokens)
    upper = torch.ones(T, T, dtype=torch.bool).triu(1)
    for layer, expected in zip(answer["layers"], maps):
        heads = torch.tensor(layer["heads"], dtype=torch.float64)              # (H, T, T)
        torch.testing.assert_close(heads, expected.double(), rtol=0, atol=1e-6)
        torch.testing.assert_close(torch.tensor(layer["mean"], dtype=torch.float64),
                                   expected.double().mean(0), rtol=0, atol=1e-6)
        torch.testing.assert_close(heads.sum(-1), torch.ones(2, T, dtype=torch.float64),
                                   rtol=0, atol=1e-5)
        assert (heads[:, upper] == 0).all(), "a token never attends to a later one"
    status, one = post(server, "/explorer/attention", model="tiny", text=TEXT, layer=1)
    assert status == 200 and one["layers"][0] is None and one["layers"][1] == answer["layers"][1]


def test_model_table_is_basegpt_info(server, root):
    status, answer = http("GET", f"{server}/explorer/model?model=tiny")
    assert status == 200, answer
    assert answer == json.loads(json.dumps(run_info(root / "tiny")))
    assert answer["parameters"]["total"] == sum(
        p.numel() for p in load_run(root / "tiny").model.parameters())


def test_metrics_are_re_read_as_training_writes_them(server, root):
    path = root / "tiny" / "metrics.jsonl"
    records = [{"step": 1, "tokens": 64, "train_loss": 5.2, "lr": 0.001},
               {"step": 2, "tokens": 128, "train_loss": 4.9, "lr": 0.002, "val_loss": 5.0}]
    path.write_text(json.dumps(records[0]) + "\n")
    try:
        assert http("GET", f"{server}/explorer/metrics?model=tiny") == (200, {"records": records[:1]})
        with path.open("a") as f:
            f.write(json.dumps(records[1]) + "\n" + '{"step": 3, "train_')   # a cut last line
        assert http("GET", f"{server}/explorer/metrics?model=tiny") == (200, {"records": records})
    finally:
        path.unlink()


def test_the_model_endpoints_wait_in_the_models_queue_like_completions(root):
    """tokens, next and attention run on the model's worker: with the model busy and its
    queue full they get the API's 429, and the run's files (model, metrics) still answer."""
    with live_server(root, Limits(max_queue=1), api_key=None) as (url, registry):
        gate = threading.Event()
        registry.workers["tiny"].submit(lambda run: gate.wait(60))        # busy, queue full
        try:
            for path in ("/explorer/tokens", "/explorer/next", "/explorer/attention"):
                status, answer = post(url, path, model="tiny", text="All")
                assert status == 429 and answer["error"]["code"] == "queue_full", (path, answer)
            assert http("GET", f"{url}/explorer/model?model=tiny")[0] == 200
            assert http("GET", f"{url}/explorer/metrics?model=tiny")[0] == 200
        finally:
            gate.set()
        deadline = time.monotonic() + 20
        while registry.workers["tiny"].pending:                    # the busy job has ended
            assert time.monotonic() < deadline, "the blocking job never ended"
            time.sleep(0.01)
        status, answer = post(url, "/explorer/tokens", model="tiny", text="All")
        assert status == 200 and answer["n_bytes"] == 3, answer


@pytest.mark.parametrize("path, body, status, param, words", [
    ("/explorer/tokens", {"model": "nope", "text": "a"}, 404, "model", "'nope' is not served"),
    ("/explorer/tokens", {"model": "tiny", "text": 3}, 400, "text", "text must be a string"),
    ("/explorer/tokens", {"model": "tiny", "text": "a", "mode": "chars"}, 400, "mode", "'chars'"),
    ("/explorer/next", {"model": "tiny", "text": "a", "temperature": -1}, 400, "temperature",
     "temperature=-1"),
    ("/explorer/next", {"model": "tiny", "text": "a", "k": 0}, 400, "k", "k must be an integer"),
    ("/explorer/attention", {"model": "tiny", "text": TEXT * 3}, 400, None, "n_context is 16"),
    ("/explorer/attention", {"model": "tiny", "text": "a", "layer": 2}, 400, "layer",
     "layer=2 does not exist"),
])
def test_bad_requests_are_4xx_naming_the_field(server, path, body, status, param, words):
    got, answer = post(server, path, **body)
    assert got == status, answer
    assert words in answer["error"]["message"] and answer["error"]["param"] == param, answer


def test_the_page_and_its_files_are_served_and_the_key_guards_the_endpoints(root):
    with live_server(root, api_key="k") as (url, registry):
        import urllib.request
        with urllib.request.urlopen(url + "/", timeout=30) as response:
            html = response.read().decode()
        assert response.headers["content-type"].startswith("text/html")
        assert '<script src="/static/app.js"' in html and "/static/style.css" in html
        for name in ("app.js", "style.css"):
            with urllib.request.urlopen(f"{url}/static/{name}", timeout=30) as response:
                assert response.status == 200 and len(response.read()) > 1000
        status, answer = post(url, "/explorer/tokens", model="tiny", text="a")
        assert status == 401 and "no API key" in answer["error"]["message"], answer
        status, answer = http("POST", url + "/explorer/tokens",
                              json.dumps({"model": "tiny", "text": "a"}).encode(),
                              {"Authorization": "Bearer k"})
        assert status == 200 and answer["ids"] == [97], answer
