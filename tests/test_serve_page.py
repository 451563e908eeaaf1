"""The explorer page in a real headless browser: Debian's chromium driven by Playwright, against
a live server on a tiny run. It types a prompt and sees its tokens, generates (streamed) and
hovers a generated token for its alternatives, checks the attention heatmap's pixels (drawn
below the diagonal, blank above it: the causal mask), and looks at the model table and the
training curves, which follow metrics.jsonl as it grows. Each view is saved as a screenshot in
the test's folder, and also in $BASEGPT_SCREENSHOTS when that is set (docs/serve/ is made so).

Skipped, with the reason, only where no chromium binary or no Playwright is installed
(`apt-get install chromium`; `pip install playwright`)."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
from helpers import tiny
from test_serve_api import live_server

from basegpt.checkpoint import WEIGHTS_FILE, load_run, save_run
from basegpt.generate import generate

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH: install "
                                 "Debian's with `apt-get install chromium` to run the page test")]

PROMPT = "First Citizen: Speak"
METRICS = [{"step": s, "tokens": 64 * s, "train_loss": 5.8 - 0.9 * math.log1p(s) + 0.1 * (s % 3),
            "lr": 0.003 * min(1.0, s / 10)} for s in range(1, 41)]
for record in METRICS[9::10]:
    record["val_loss"] = record["train_loss"] + 0.2


@pytest.fixture(scope="module")
def root(tokenizer, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    save_run(root / "tiny", tiny(tokenizer), tokenizer)
    (root / "tiny" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in METRICS[:30]))
    save_run(root / "zbroken", tiny(tokenizer), tokenizer)
    (root / "zbroken" / WEIGHTS_FILE).write_bytes(b"not a safetensors file")   # its curves stay
    (root / "zbroken" / "metrics.jsonl").write_text(
        "".join(json.dumps({**r, "train_loss": r["train_loss"] + 0.5}) + "\n" for r in METRICS))
    return root


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed: "
                                   "pip install playwright (the test extra has it)")
    with sync_api.sync_playwright() as p:
        # --no-sandbox: chromium's sandbox refuses to start as root, as in CI containers.
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def snap(page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=tmp_path / f"{name}.png")
    folder = os.environ.get("BASEGPT_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=Path(folder) / f"{name}.png")


def test_the_page_shows_tokens_generation_attention_model_and_training(browser, root, tmp_path):
    run = load_run(root / "tiny")
    with live_server(root, api_key=None) as (url, registry):
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        streams = []
        page.on("response", lambda r: streams.append(r.headers.get("content-type", ""))
                if r.url.endswith("/v1/completions") else None)
        page.goto(url + "/")
        assert page.locator("#model option").all_inner_texts() == ["tiny", "zbroken"]
        total = f"{sum(p.numel() for p in run.model.parameters()):,}"
        page.wait_for_function(f"document.querySelector('#run-status').textContent.includes('{total}')")

        # Tokens: typed text becomes one span per token, with its id; hover names the merge.
        page.fill("#text", PROMPT)
        ids = run.tokenizer.encode(PROMPT)
        page.wait_for_function(f"document.querySelectorAll('#tok-spans .tok').length == {len(ids)}")
        assert page.locator("#tok-spans .tok sub").all_inner_texts() == [str(i) for i in ids]
        assert f"{len(PROMPT)} bytes" in page.inner_text("#tok-stats")
        merged = next(n for n, i in enumerate(ids) if i >= 256)
        page.hover(f"#tok-spans .tok >> nth={merged}")
        a, b = run.tokenizer.merges[ids[merged] - 256]
        assert f"merge of {a}" in page.inner_text("#tip") and f"+ {b}" in page.inner_text("#tip")
        snap(page, tmp_path, "tokens")

        # Next token: the bars under the sampling controls.
        page.click("#tabs button[data-view=next]")
        page.wait_for_function("document.querySelectorAll('#next-bars .bar-track').length == 15")
        assert "of 320 tokens can be sampled" in page.inner_text("#next-stats")
        snap(page, tmp_path, "next-token")

        # Generate: streamed (server-sent events), equal to basegpt's generate for the seed;
        # then each token hoverable with its probability and 5 alternatives.
        page.click("#tabs button[data-view=generate]")
        page.fill("#seed", "3")
        page.fill("#max-tokens", "24")
        page.click("#gen-go")
        page.wait_for_function("document.querySelector('#gen-stats').textContent.includes('hover')",
                               timeout=30_000)
        assert "text/event-stream" in streams[0], streams
        expected = generate(run.model, run.tokenizer, PROMPT, max_new_tokens=24, seed=3)
        assert page.inner_text("#gen-out") == PROMPT + expected
        page.hover("#gen-out .gen >> nth=3")
        tip = page.inner_text("#tip")
        steps = tip.count("had probability")         # 2 where a token completes a character
        assert steps >= 1 and page.locator("#tip tr").count() == 5 * steps, tip
        snap(page, tmp_path, "generate")

        # Attention: drawn below the diagonal, blank above it; clicking a token shades the text.
        page.fill("#text", PROMPT)
        page.click("#tabs button[data-view=attention]")
        page.wait_for_function("document.querySelector('#att-stats').textContent.includes('tokens')")
        pixels = page.evaluate("""() => {
            const {canvas, T, cell} = attentionGeometry();
            const ctx = canvas.getContext('2d');
            const at = (t, s) => Array.from(ctx.getImageData(LABELS + (s + 0.5) * cell,
                                            LABELS + (t + 0.5) * cell, 1, 1).data);
            const lower = [], upper = [];
            for (let t = 0; t < T; t++) for (let s = 0; s < T; s++)
                (s <= t ? lower : upper).push(at(t, s));
            return {T, lower, upper};
        }""")
        assert pixels["T"] == len(ids)
        white = [255, 255, 255, 255]
        assert all(p == white for p in pixels["upper"]), "the masked upper triangle is blank"
        assert all(p != white for p in pixels["lower"]), "every allowed cell is drawn"
        page.click("#att-text .tok >> nth=2")
        shaded = page.eval_on_selector_all(
            "#att-text .tok", "spans => spans.map(s => getComputedStyle(s).backgroundColor)")
        assert all(c == "rgb(255, 255, 255)" for c in shaded[3:]), "later tokens are not seen"
        assert all(c.startswith("rgba(36, 87, 197") for c in shaded[:3]), shaded
        page.select_option("#att-head", "1")
        page.select_option("#att-layer", "1")                  # asks for layer 1's weights
        page.wait_for_function("document.querySelector('#att-stats').textContent.includes('layer 1, head 1')")
        snap(page, tmp_path, "attention")

        # Model: basegpt info's table.
        page.click("#tabs button[data-view=model-view]")
        page.wait_for_function(f"document.querySelector('#model-params').textContent.includes('{total}')")
        assert "2 \u00d7 block" in page.inner_text("#model-flow")
        snap(page, tmp_path, "model")

        # Training: the curves, re-read every few seconds while metrics.jsonl grows.
        page.click("#tabs button[data-view=training]")
        page.wait_for_function("document.querySelector('#train-stats').textContent.includes('step 30')")
        with (root / "tiny" / "metrics.jsonl").open("a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in METRICS[30:]))
        page.wait_for_function("document.querySelector('#train-stats').textContent.includes('step 40')",
                               timeout=10_000)
        count = """rgb => { const c = document.querySelector('#loss-canvas');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 0; i < d.length; i += 4)
                if (Math.abs(d[i] - rgb[0]) + Math.abs(d[i + 1] - rgb[1]) + Math.abs(d[i + 2] - rgb[2]) < 40) n++;
            return n; }"""
        blue, red = [36, 87, 197], [192, 57, 43]
        assert page.evaluate(count, blue) > 200, "this run's curves are drawn, in blue"
        assert page.evaluate(count, red) == 0
        page.check("#train-runs input[value=zbroken]")                 # overlay another run
        page.wait_for_function(f"({count})({red}) > 200")
        snap(page, tmp_path, "training")

        # A run that cannot be loaded: an error on the page that names it; the server goes on.
        page.click("#tabs button[data-view=tokens]")
        page.select_option("#model", "zbroken")
        page.wait_for_selector("#error:not([hidden])")
        assert "'zbroken' could not be loaded" in page.inner_text("#error")
        page.select_option("#model", "tiny")
        page.wait_for_selector("#error", state="hidden")
        assert errors == [], errors


def test_with_an_api_key_the_page_asks_for_it_and_then_works(browser, root):
    with live_server(root, api_key="s3cret") as (url, registry):
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        page.goto(url + "/")
        page.wait_for_selector("#key-box:not([hidden])")
        assert "no API key was given" in page.inner_text("#error")
        assert page.locator("#model option").count() == 0
        page.fill("#api-key", "s3cret")
        page.dispatch_event("#api-key", "change")
        page.wait_for_function("document.querySelectorAll('#tok-spans .tok').length > 0")
        assert page.locator("#model option").all_inner_texts() == ["tiny", "zbroken"]
        assert page.is_hidden("#error")
