"""Do the main job's defaults learn fastest? The `laptop` preset against one-lever variants.

`basegpt train` with no arguments trains the `laptop` preset (basegpt/presets/laptop.json) for
a fixed time budget. Its settings should be the ones that reach the lowest validation loss in
that time on a laptop CPU. This benchmark trains the preset and variants that each change one
lever (architecture, depth, learning rate, context, batch, precision), every one through the
real CLI with the same time budget, the same built-in corpus, tokenizer and validation
windows, and prints the final and best validation bits per byte of each (lower is better;
bits per byte does not depend on the context length or batch, so the variants compare).

    python benchmarks/bench_defaults.py                 # 2 minutes a run, ~21 minutes in all
    python benchmarks/bench_defaults.py --minutes 4     # the main job's own budget
    python benchmarks/bench_defaults.py --only 0 0 4    # the preset twice, and lr 6e-3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# label -> flags on top of `--preset laptop`
VARIANTS: dict[str, list[str]] = {
    "laptop preset (the main job)": [],
    "original design's blocks (post-LN LayerNorm, sinusoidal, ReLU, biases)":
        ["--norm-position", "post", "--norm", "layernorm", "--positional", "sinusoidal",
         "--activation", "relu", "--bias"],
    "GPT-2's blocks (pre-LN LayerNorm, learned positions, biases)":
        ["--norm", "layernorm", "--positional", "learned", "--bias"],
    "lr 1e-3 (preset 3e-3)": ["--lr", "0.001"],
    "lr 6e-3": ["--lr", "0.006"],
    "context 64 (preset 128)": ["--n-context", "64"],
    "batch 32 (preset 16)": ["--batch-size", "32"],
    "fp32 (auto: bf16 autocast on a CPU with bf16 instructions)": ["--dtype", "float32"],
    "6 blocks (preset 4)": ["--n-block", "6"],
}


def train(flags: list[str], minutes: float, out: Path) -> dict:
    """One `basegpt train --preset laptop` run; its validation record from metrics.jsonl."""
    cmd = [sys.executable, "-m", "basegpt", "train", "--preset", "laptop", "--quiet",
           "--max-minutes", str(minutes), "--out", str(out), *flags]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "val_bpb" in r]
    return {"final": evals[-1]["val_bpb"], "best": min(r["val_bpb"] for r in evals),
            "evals": len(evals), "steps": evals[-1].get("step")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0, help="time budget of every run")
    parser.add_argument("--only", nargs="+", type=int, choices=range(len(VARIANTS)), metavar="N",
                        help="run only these variants, by number (0 = the preset; repeat one to "
                             "see the run-to-run spread)")
    args = parser.parse_args()
    labels = list(VARIANTS)
    chosen = [labels[i] for i in args.only] if args.only else labels
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip() or "?"
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"commit {commit}, {args.minutes:g} minutes a run\n")
    print("| variant of the laptop preset | final val bits/byte | best | evaluations | steps |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for i, label in enumerate(chosen):
            r = train(VARIANTS[label], args.minutes, Path(tmp) / f"run{i}")
            if "error" in r:
                print(f"| {label} | error: {r['error']} | | | |", flush=True)
            else:
                print(f"| {label} | {r['final']:.4f} | {r['best']:.4f} | {r['evals']} | "
                      f"{r['steps']} |", flush=True)


if __name__ == "__main__":
    main()
