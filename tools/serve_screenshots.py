"""Screenshots of the explorer page (`basegpt serve`) for docs/serve.md, one PNG per view.

    basegpt train --preset seed --max-bytes 1000000 --max-steps 250 --out /tmp/page-run
    python tools/serve_screenshots.py /tmp/page-run --out docs/serve

Serves the run on a free port of 127.0.0.1, opens the page in headless chromium (Debian's
`chromium`, driven by Playwright) at a 1366x768 laptop size, and saves tokens.png,
next-token.png, generate.png (hovering a generated token), attention.png and model.png and
training.png. The prompt and the seed are fixed, so the same run gives the same pictures.
"""

from __future__ import annotations

import argparse
import shutil
import threading
import time
from pathlib import Path

PROMPT = "import json\n\n\ndef read_config(path):\n    with open(path) as f:\n        return json."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/serve"))
    parser.add_argument("--prompt", default=PROMPT)
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("no chromium on PATH: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    from basegpt.serve import Registry, bind, build_app, find_runs, make_server

    registry = Registry(find_runs([args.run_dir]))
    sock = bind("127.0.0.1", 0)
    server = make_server(build_app(registry))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.goto(url)
            page.wait_for_function("document.querySelector('#run-status').textContent !== ''")
            page.fill("#text", args.prompt)
            n_bytes = len(args.prompt.encode("utf-8"))
            page.wait_for_function(f"document.querySelector('#tok-stats').textContent.startsWith('{n_bytes} bytes')")
            page.hover("#tok-spans .tok >> nth=4")
            page.screenshot(path=args.out / "tokens.png")

            page.click("#tabs button[data-view=next]")
            page.fill("#temperature", "0.8")
            page.fill("#top_p", "0.9")
            page.wait_for_timeout(600)
            page.wait_for_function("document.querySelectorAll('#next-bars .bar-track').length == 15")
            page.screenshot(path=args.out / "next-token.png")

            page.click("#tabs button[data-view=generate]")
            page.fill("#seed", "1")
            page.fill("#max-tokens", "120")
            page.click("#gen-go")
            page.wait_for_function("document.querySelector('#gen-stats').textContent.includes('hover')",
                                   timeout=60_000)
            page.hover("#gen-out .gen >> nth=6")
            page.screenshot(path=args.out / "generate.png")

            page.click("#tabs button[data-view=attention]")
            page.wait_for_function("document.querySelector('#att-stats').textContent.includes('tokens')")
            page.select_option("#att-head", "2")
            page.select_option("#att-layer", "1")
            page.wait_for_function("document.querySelector('#att-stats').textContent.includes('layer 1, head 2')")
            page.click("#att-text .tok >> nth=-2")
            page.screenshot(path=args.out / "attention.png")

            page.click("#tabs button[data-view=model-view]")
            page.wait_for_function("document.querySelector('#model-params').textContent.includes('total')")
            page.screenshot(path=args.out / "model.png")

            page.click("#tabs button[data-view=training]")
            page.wait_for_function("document.querySelector('#train-stats').textContent.includes('step')")
            page.screenshot(path=args.out / "training.png")
            browser.close()
    finally:
        server.should_exit = True
        registry.close()
    print(f"wrote 6 screenshots to {args.out}")


if __name__ == "__main__":
    main()
