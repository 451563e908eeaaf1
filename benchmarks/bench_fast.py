"""What basegpt.fast pays for: decoding and training tokens/s with the speed tricks on and off.

Each measurement runs in a fresh process (the switch, BASEGPT_FAST, is read when models are
built and calls start; malloc settings last for a process), the contenders taking turns round
by round, so a drifting machine slows both alike. Medians are printed, with the ratio.

    decode   greedy generation, batch 1, 256 new tokens after 16, one thread, random float32
             weights: bench_generate.py's two sizes (seed 4x128, larger 6x256, GPT-2-shaped).
             On: weights in (in, out) order and DecodeStep; off: row-major, every step
             through model.forward.
    train    fit, the seed size (4 blocks x 128, context 64, batch 32), 40 steps after 5,
             on tinyshakespeare (or the built-in corpus), bf16 autocast and fp32, torch's
             default threads. On: attention's manual steps in bf16 training on CPUs with bf16
             instructions, and malloc kept (as `basegpt train` asks); off: neither.

    python benchmarks/bench_fast.py                      # on vs off, 5 rounds
    python benchmarks/bench_fast.py --against ../old     # this checkout vs another one, both on
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
SIZES = {"seed 4x128": dict(n_block=4, n_embed=128, n_head=4, n_ff=256),
         "larger 6x256": dict(n_block=6, n_embed=256, n_head=8, n_ff=1024)}


def decode(size: str) -> float:
    import torch
    from basegpt import B2lM
    from basegpt.config import ModelConfig
    from basegpt.generate import generate_ids
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = B2lM(ModelConfig(vocab_size=4096, n_context=1024, n_k=32, n_v=32,
                             norm_position="pre", activation="gelu", positional="learned",
                             tie_weights=True, **SIZES[size])).eval()
    prompt = [list(range(1, 17))]
    generate_ids(model, prompt, max_new_tokens=32, temperature=0)        # warm-up
    start = time.perf_counter()
    generate_ids(model, prompt, max_new_tokens=256, temperature=0)
    return 256 / (time.perf_counter() - start)


def train(dtype: str) -> float:
    import torch
    from basegpt import B2lM, Tokenizer
    from basegpt.corpus import builtin_corpus
    from basegpt.data import SlidingWindowDataset
    from basegpt.train import fit
    try:
        from basegpt.fast import enabled, keep_freed_memory
    except ImportError:                               # --against a checkout from before it
        from basegpt.devices import keep_freed_memory
        enabled = lambda: True                        # noqa: E731
    if enabled():
        keep_freed_memory()                           # as `basegpt train` asks on a CPU
    text = TEXT.read_text()[:400_000] if TEXT.is_file() else "".join(builtin_corpus(400_000))
    tokenizer = Tokenizer(vocab_size=512).train(text, progress=False)
    data = SlidingWindowDataset(tokenizer=tokenizer, n_context=64, texts=[text])
    torch.manual_seed(0)
    model = B2lM(vocab_size=len(tokenizer), n_embed=128, n_block=4, n_head=4, n_k=32, n_v=32,
                 n_ff=256, n_context=64)
    times: list[float] = []
    fit(model, data, None, dict(max_steps=45, batch_size=32, dtype=dtype, device="cpu"),
        progress=False, on_step=lambda record: times.append(time.perf_counter()))
    return 40 * 32 * 64 / (times[-1] - times[4])      # the steps after the first five


JOBS = {f"decode, {size}": (decode, size) for size in SIZES} | {
    f"train, {dtype}": (train, dtype) for dtype in ("bfloat16", "float32")}


def measure(job: str, tree: Path, on: bool) -> float:
    env = {**os.environ, "BASEGPT_FAST": "1" if on else "0", "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, __file__, "--job", job], env=env, cwd=tree,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--only", nargs="+", choices=sorted(JOBS), default=sorted(JOBS))
    p.add_argument("--against", type=Path, help="another checkout of basegpt, run with the "
                   "tricks on, instead of this one with them off")
    p.add_argument("--job", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.job:
        function, argument = JOBS[args.job]
        print(json.dumps(function(argument)))
        return
    names = ("this checkout", str(args.against)) if args.against else ("fast on", "fast off")
    contenders = ([(ROOT, True), (args.against.resolve(), True)] if args.against
                  else [(ROOT, True), (ROOT, False)])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    print(f"commit {commit}, {args.rounds} rounds, medians (tokens/s)\n")
    print(f"| job | {names[0]} | {names[1]} | ratio | rounds, {names[0]} / {names[1]} |")
    print("|---|---:|---:|---:|---|")
    for job in args.only:
        results: list[list[float]] = [[], []]
        for _ in range(args.rounds):
            for i, (tree, on) in enumerate(contenders):
                results[i].append(measure(job, tree, on))
        a, b = (statistics.median(r) for r in results)
        rounds = " / ".join(", ".join(f"{x:,.0f}" for x in r) for r in results)
        print(f"| {job} | {a:,.0f} | {b:,.0f} | {a / b:.2f}x | {rounds} |", flush=True)


if __name__ == "__main__":
    main()
