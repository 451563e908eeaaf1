"""Training benchmark: basegpt's loop against a plain PyTorch loop over HF GPT2LMHeadModel.

Same machine, same data (tinyshakespeare, tokenized once with a basegpt tokenizer), same
model size (the original design's: 4 blocks, width 128, 4 heads of 32, FF 256, context 64),
same batch (32 x 64 tokens). Every run is its own subprocess, so thread and compile settings
do not leak between runs.

1. Speed levers: training tokens/s of basegpt in fp32 / bf16 autocast, eager / torch.compile,
   1 / 2 threads, fused (the default) / foreach Adam, and of the HF loop in fp32 and bf16.
2. Learning at equal wall time: validation bits per byte against training seconds for
   basegpt's chosen defaults and for the HF loop; the curves go to a PNG.

    python benchmarks/bench_train.py                  # ~15 minutes on a 2-core laptop
    python benchmarks/bench_train.py --quick          # a smoke run
    python benchmarks/bench_train.py --curves-only    # part 2 only (~7 minutes)
Needs ../shared/data/tinyshakespeare.txt (or --text PATH) and `transformers`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from torch.utils.data import Dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_TEXT = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
SIZE = dict(n_embed=128, n_block=4, n_head=4, n_k=32, n_v=32, n_ff=256, n_context=64)
BATCH, T, VOCAB = 32, 64, 1024

# basegpt variants: (label, model overrides, train overrides, threads)
SPEED_RUNS = {
    "basegpt seed arch, fp32": ({}, {}, 2),
    "basegpt seed arch, bf16 autocast": ({}, {"dtype": "bfloat16"}, 2),
    "basegpt seed arch, fp32, 1 thread": ({}, {}, 1),
    "basegpt seed arch, fp32, foreach Adam": ({}, {"kernels": "foreach"}, 2),
    "basegpt seed arch, fp32, compile": ({}, {"compile": "on"}, 2),
    "basegpt seed arch, bf16, compile": ({}, {"dtype": "bfloat16", "compile": "on"}, 2),
    "basegpt pre-LN rope gelu, fp32": ({"norm_position": "pre", "positional": "rope",
                                        "activation": "gelu"}, {}, 2),
    "basegpt pre-LN rope gelu, bf16": ({"norm_position": "pre", "positional": "rope",
                                        "activation": "gelu"}, {"dtype": "bfloat16"}, 2),
}
HF_RUNS = {"HF GPT2 plain loop, fp32": "float32", "HF GPT2 plain loop, bf16 autocast": "bfloat16"}


def load_tokens(text_path: Path):
    """tinyshakespeare -> (train ids, val ids, tokenizer); the last 10% is validation."""
    import torch
    from basegpt import Tokenizer
    text = text_path.read_text(encoding="utf-8")
    cut = int(len(text) * 0.9)
    tok = Tokenizer(vocab_size=VOCAB).train(text[:cut], progress=False)
    train = torch.tensor(tok.encode(text[:cut]))
    val = torch.tensor(tok.encode(text[cut:]))
    return train, val, tok


class Windows(Dataset):
    """Non-overlapping (input, target) windows of T tokens over a token tensor."""

    def __init__(self, ids, T: int) -> None:
        self.ids, self.T = ids, T

    def __len__(self) -> int:
        return (len(self.ids) - 1) // self.T

    def __getitem__(self, i: int):
        chunk = self.ids[i * self.T:(i + 1) * self.T + 1]
        return chunk[:-1], chunk[1:]


def val_bpb(model_fn, val: Windows, bytes_per_token, n_windows: int = 256) -> float:
    """Bits per byte of model_fn (ids -> logits) on the first n_windows validation windows."""
    import torch
    import torch.nn.functional as F
    nll, n_bytes = 0.0, 0.0
    with torch.no_grad():
        for s in range(0, min(n_windows, len(val)), 64):
            xs, ys = zip(*(val[i] for i in range(s, min(s + 64, n_windows, len(val)))))
            x, y = torch.stack(xs), torch.stack(ys)
            logits = model_fn(x).float()
            nll += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
            n_bytes += bytes_per_token[y.flatten()].sum().item()
    return nll / math.log(2) / n_bytes


# ------------------------------------------------------------------------ jobs

def job_basegpt(args, model_kw: dict, train_kw: dict, minutes: float | None) -> dict:
    import torch
    from basegpt import B2lM
    from basegpt.train import TrainConfig, fit, token_bytes
    train_ids, val_ids, tok = load_tokens(Path(args.text))
    train_kw = dict(train_kw)
    if train_kw.pop("kernels", "fused") == "foreach":     # the optimizer lever: not a config field
        import basegpt.train
        basegpt.train.fused_adam_available = lambda device: False
    torch.manual_seed(0)
    model = B2lM(vocab_size=len(tok), **{**SIZE, **model_kw})
    val = Windows(val_ids, T)
    table = token_bytes(tok, len(tok))
    curve, records = [], []
    eval_every = max(1, int(args.eval_every))

    def on_step(r):
        records.append(r)
        if minutes is not None and r["step"] % eval_every == 0:
            curve.append((r["train_seconds"], val_bpb(model, val, table)))
            model.train()
    config = dict(batch_size=BATCH, lr=args.lr, warmup_steps=20, optimizer="adamw",
                  weight_decay=0.1, schedule="cosine", **train_kw)
    if minutes is None:
        config["max_steps"] = args.steps + args.warmup
        config["schedule"] = "constant"
    else:
        config["max_minutes"] = minutes
    start = time.perf_counter()
    fit(model, Windows(train_ids, T), config=TrainConfig(**config), tokenizer=tok,
        progress=False, on_step=on_step)
    timed = records[args.warmup:] if minutes is None else records
    tok_s = (len(timed) * BATCH * T) / sum(BATCH * T / r["tokens_per_s"] for r in timed)
    final = val_bpb(model, val, table)
    if minutes is not None:
        curve.append((records[-1]["train_seconds"], final))
    return {"tokens_per_s": tok_s, "first_step_s": BATCH * T / records[0]["tokens_per_s"],
            "wall_s": time.perf_counter() - start, "final_bpb": final, "curve": curve}


def job_hf(args, dtype_name: str, minutes: float | None) -> dict:
    """A plain loop: HF model, AdamW, fixed lr, shuffled batches, loss from the model."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    from basegpt.train import token_bytes
    train_ids, val_ids, tok = load_tokens(Path(args.text))
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=T, n_embd=SIZE["n_embed"],
                     n_layer=SIZE["n_block"], n_head=SIZE["n_head"], n_inner=SIZE["n_ff"],
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=args.hf_lr, weight_decay=0.1)
    data, val = Windows(train_ids, T), Windows(val_ids, T)
    table = token_bytes(tok, len(tok))
    dtype = getattr(torch, dtype_name)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(data), generator=g)
    times, curve, train_s, step = [], [], 0.0, 0
    n_steps = args.steps + args.warmup if minutes is None else 10 ** 9
    start = time.perf_counter()
    while step < n_steps and (minutes is None or train_s < minutes * 60):
        idx = order[(step * BATCH) % (len(order) - BATCH):][:BATCH]
        xs, ys = zip(*(data[int(i)] for i in idx))
        x, y = torch.stack(xs), torch.stack(ys)
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        times.append(dt)
        train_s += dt
        step += 1
        if minutes is not None and step % args.eval_every == 0:
            model.eval()
            curve.append((train_s, val_bpb(lambda ids: model(input_ids=ids).logits, val, table)))
            model.train()
    model.eval()
    final = val_bpb(lambda ids: model(input_ids=ids).logits, val, table)
    if minutes is not None:
        curve.append((train_s, final))
    timed = times[args.warmup:] if minutes is None else times
    return {"tokens_per_s": len(timed) * BATCH * T / sum(timed), "first_step_s": times[0],
            "wall_s": time.perf_counter() - start, "final_bpb": final, "curve": curve}


# ------------------------------------------------------------------------ driver

def run(kind: str, name: str, args, threads: int = 2) -> dict:
    cmd = [sys.executable, __file__, "--job", kind, name, "--text", str(args.text),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--minutes", str(args.minutes),
           "--eval-every", str(args.eval_every), "--lr", str(args.lr), "--hf-lr", str(args.hf_lr)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", type=Path, default=DEFAULT_TEXT)
    p.add_argument("--steps", type=int, default=40, help="timed steps per speed run")
    p.add_argument("--warmup", type=int, default=5, help="untimed first steps")
    p.add_argument("--minutes", type=float, default=3.0, help="training time per curve run")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--lr", type=float, default=3e-3, help="basegpt peak lr (cosine)")
    p.add_argument("--hf-lr", type=float, default=1e-3, help="HF plain loop lr (constant)")
    p.add_argument("--curve", default="pre-LN rope gelu, fp32",
                   help="the basegpt variant for the learning curve (a SPEED_RUNS label suffix; "
                        "default: the modern architecture in what dtype='auto' picks on CPU)")
    p.add_argument("--curves-only", action="store_true", help="skip the speed levers")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--png", type=Path, default=ROOT / "benchmarks" / "train_curves.png")
    p.add_argument("--job", nargs=2)
    args = p.parse_args()
    if not args.text.is_file():
        raise SystemExit(f"{args.text} not found; pass --text PATH")
    if args.job:
        kind, name = args.job
        minutes = args.minutes if kind.endswith("curve") else None
        if kind.startswith("basegpt"):
            model_kw, train_kw, _ = SPEED_RUNS[name]
            result = job_basegpt(args, model_kw, train_kw, minutes)
        else:
            result = job_hf(args, HF_RUNS[name], minutes)
        print(json.dumps(result))
        return
    if args.quick:
        args.steps, args.warmup, args.minutes, args.eval_every = 5, 2, 0.2, 10

    import platform
    import torch
    print(f"# training benchmark: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}")
    print(f"# model {SIZE}, batch {BATCH} x {T}, vocab {VOCAB}, text {args.text.name}\n")
    if not args.curves_only:
        speed_levers(args)
    curves(args)


def speed_levers(args) -> None:
    """Part 1: tokens/s of every SPEED_RUNS and HF_RUNS entry, one subprocess each."""
    print("## Speed levers (tokens/s of training steps, after warmup)\n")
    print("| run | tokens/s | first step s |")
    print("|---|---:|---:|")
    speeds = {}
    for name, (_, _, threads) in SPEED_RUNS.items():
        speeds[name] = r = run("basegpt", name, args, threads)
        print(f"| {name} | {r.get('tokens_per_s', 0):,.0f} | {r.get('first_step_s', 0):.1f} |"
              if "error" not in r else f"| {name} | error: {r['error']} | |", flush=True)
    for name in HF_RUNS:
        speeds[name] = r = run("hf", name, args)
        print(f"| {name} | {r.get('tokens_per_s', 0):,.0f} | {r.get('first_step_s', 0):.1f} |"
              if "error" not in r else f"| {name} | error: {r['error']} | |", flush=True)
    hf = speeds["HF GPT2 plain loop, fp32"].get("tokens_per_s")
    if hf:
        print("\nratio to the HF fp32 loop: " + ", ".join(
            f"{n}: {r['tokens_per_s'] / hf:.2f}x" for n, r in speeds.items() if "tokens_per_s" in r))


def curves(args) -> None:
    """Part 2: validation bits per byte against training seconds, basegpt and HF; a PNG."""
    label = next(n for n in SPEED_RUNS if n.endswith(args.curve))
    print(f"\n## Learning at equal training time ({args.minutes:g} min each)\n")
    ours = run("basegpt-curve", label, args)
    theirs = run("hf-curve", "HF GPT2 plain loop, fp32", args)
    print("| run | final val bits/byte | steps/curve points |")
    print("|---|---:|---:|")
    for name, r in ((label, ours), ("HF GPT2 plain loop, fp32", theirs)):
        print(f"| {name} | {r.get('final_bpb', float('nan')):.4f} | {len(r.get('curve', []))} |"
              if "error" not in r else f"| {name} | error: {r['error']} | |")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7, 4))
        for name, r in ((label, ours), ("HF GPT2 plain loop, fp32", theirs)):
            if r.get("curve"):
                xs, ys = zip(*r["curve"])
                ax.plot(xs, ys, "o-", label=name)
        ax.set(xlabel="training seconds", ylabel="validation bits per byte",
               title="tinyshakespeare, seed-size model, same data and batch")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.png, dpi=100)
        print(f"\ncurves: {args.png}")
    except ImportError:
        print("\n(no matplotlib: no plot)")


if __name__ == "__main__":
    main()
