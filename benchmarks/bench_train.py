"""Training benchmark: basegpt's loop against a plain PyTorch loop over HF GPT2LMHeadModel.

Same machine, same data (tinyshakespeare, tokenized once with a basegpt tokenizer), same
model size (the original design's: 4 blocks, width 128, 4 heads of 32, FF 256, context 64),
same batch (32 x 64 tokens). Every run is its own subprocess, so thread and compile settings
do not leak between runs.

0. Attention kernels: one layer's forward + backward, manual steps against torch's fused
   kernel, fp32 and bf16, T = 64 to 1024.
1. Speed levers: training tokens/s of basegpt in fp32 / bf16 autocast, eager / torch.compile,
   1 / 2 threads, fused (the default) / foreach Adam, the attention kernel's CPU bf16 hand-off
   on / off, glibc's malloc kept (`basegpt train`'s default on a CPU) / its defaults, and of the HF loop
   in fp32 and bf16 (its default sdpa attention, and eager), with its malloc left alone (a
   plain loop) and kept as fit keeps it.
2. Learning at equal wall time: validation bits per byte against training seconds for
   basegpt's defaults in bf16 and fp32 and for the HF loop in fp32; the curves go to a PNG.

    python benchmarks/bench_train.py                  # ~30 minutes on a 2-core laptop
    python benchmarks/bench_train.py --quick          # a smoke run
    python benchmarks/bench_train.py --curves-only    # part 2 only (~10 minutes)
    python benchmarks/bench_train.py --speed-only     # parts 0 and 1 (~15 minutes)
    python benchmarks/bench_train.py --attention-only # part 0 only (~1 minute)
    python benchmarks/bench_train.py --speed-only --only fp32   # the fp32 levers only
Needs ../shared/data/tinyshakespeare.txt (or --text PATH) and `transformers`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
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
MODERN = {"norm_position": "pre", "positional": "rope", "activation": "gelu"}

# basegpt variants: (label, model overrides, train overrides, threads). "bf16" is autocast,
# what dtype="auto" picks on a CPU with bf16 instructions (fp32 on one without).
SPEED_RUNS = {
    "basegpt seed arch, fp32": ({}, {"dtype": "float32"}, 2),
    "basegpt seed arch, bf16": ({}, {"dtype": "bfloat16"}, 2),
    "basegpt seed arch, bf16, fused attention backward": ({}, {"dtype": "bfloat16",
                                                               "fused_attention": True}, 2),
    "basegpt seed arch, bf16, glibc malloc defaults": ({}, {"dtype": "bfloat16",
                                                            "malloc": "defaults"}, 2),
    "basegpt seed arch, fp32, glibc malloc defaults": ({}, {"dtype": "float32",
                                                            "malloc": "defaults"}, 2),
    "basegpt seed arch, fp32, 1 thread": ({}, {"dtype": "float32"}, 1),
    "basegpt seed arch, bf16, 1 thread": ({}, {"dtype": "bfloat16"}, 1),
    "basegpt seed arch, bf16, foreach Adam": ({}, {"dtype": "bfloat16", "kernels": "foreach"}, 2),
    "basegpt seed arch, fp32, compile": ({}, {"dtype": "float32", "compile": "on"}, 2),
    "basegpt seed arch, bf16, compile": ({}, {"dtype": "bfloat16", "compile": "on"}, 2),
    "basegpt pre-LN rope gelu, fp32": (MODERN, {"dtype": "float32"}, 2),
    "basegpt pre-LN rope gelu, bf16": (MODERN, {"dtype": "bfloat16"}, 2),
}
# Learning-curve-only variants, in SPEED_RUNS' format: on a 1 MB text a loop fast enough to see
# it many times in 3 minutes overfits, and basegpt's own preset for tinyshakespeare
# (shakespeare-char) regularises with dropout, as nanoGPT's does.
DROPOUT = {"embed_dropout": 0.1, "attn_dropout": 0.1, "resid_dropout": 0.1}
CURVE_RUNS = {"basegpt pre-LN rope gelu, bf16, dropout 0.1": ({**MODERN, **DROPOUT},
                                                             {"dtype": "bfloat16"}, 2)}

# the HF loop: (autocast dtype, attention implementation, malloc kept as fit keeps it)
HF_RUNS = {"HF GPT2 plain loop, fp32": ("float32", "sdpa", False),
           "HF GPT2 plain loop, bf16 autocast": ("bfloat16", "sdpa", False),
           "HF GPT2 plain loop, bf16 autocast, eager attention": ("bfloat16", "eager", False),
           "HF GPT2 plain loop, fp32, malloc kept": ("float32", "sdpa", True),
           "HF GPT2 plain loop, bf16 autocast, eager attention, malloc kept": (
               "bfloat16", "eager", True)}
HF_BASELINE = "HF GPT2 plain loop, fp32"


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
    from basegpt.evaluation import token_bytes
    from basegpt.train import TrainConfig, fit
    train_ids, val_ids, tok = load_tokens(Path(args.text))
    train_kw = dict(train_kw)
    if train_kw.pop("kernels", "fused") == "foreach":     # the optimizer lever: not a config field
        import basegpt.optim
        basegpt.optim.fused_adam_available = lambda device: False
    if train_kw.pop("fused_attention", False):        # the attention lever: not a config field
        import basegpt.fast.attention
        basegpt.fast.attention.CPU_LOW_PRECISION_MANUAL_MAX_KEYS = 0    # no hand-off to manual
    if train_kw.pop("malloc", "kept") == "kept":      # the malloc lever: the CLI's, not fit's
        from basegpt.fast import keep_freed_memory
        keep_freed_memory()
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


def job_hf(args, dtype_name: str, attention: str, keep_malloc: bool,
           minutes: float | None) -> dict:
    """A plain loop: HF model, AdamW, fixed lr, shuffled batches, loss from the model;
    keep_malloc: with glibc's malloc set as `basegpt train` sets it on a CPU."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    from basegpt.evaluation import token_bytes
    if keep_malloc:
        from basegpt.fast import keep_freed_memory
        keep_freed_memory()
    train_ids, val_ids, tok = load_tokens(Path(args.text))
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=T, n_embd=SIZE["n_embed"],
                     n_layer=SIZE["n_block"], n_head=SIZE["n_head"], n_inner=SIZE["n_ff"],
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     attn_implementation=attention)
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
    p.add_argument("--rounds", type=int, default=3, help="rounds of the speed runs (best kept)")
    p.add_argument("--minutes", type=float, default=3.0, help="training time per curve run")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--lr", type=float, default=3e-3, help="basegpt peak lr (cosine)")
    p.add_argument("--hf-lr", type=float, default=1e-3, help="HF plain loop lr (constant)")
    p.add_argument("--curve", nargs="+", default=["pre-LN rope gelu, bf16", "pre-LN rope gelu, fp32"],
                   help="the basegpt variants for the learning curves (SPEED_RUNS or CURVE_RUNS "
                        "label suffixes; "
                        "default: the modern architecture in what dtype='auto' picks on a CPU "
                        "with bf16 instructions, and in fp32)")
    p.add_argument("--only", nargs="+", metavar="TEXT",
                   help="speed levers: only the runs whose label contains one of these (e.g. "
                        "fp32, where bf16 is emulated and slow); the HF fp32 loop always runs")
    p.add_argument("--curves-only", action="store_true", help="skip the speed levers")
    p.add_argument("--speed-only", action="store_true", help="parts 0 and 1, not the curves")
    p.add_argument("--attention-only", action="store_true",
                   help="only the attention kernels' table (part 0, ~1 minute)")
    p.add_argument("--attention-repeats", type=int, default=5)
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
            model_kw, train_kw, _ = {**SPEED_RUNS, **CURVE_RUNS}[name]
            result = job_basegpt(args, model_kw, train_kw, minutes)
        else:
            result = job_hf(args, *HF_RUNS[name], minutes)
        print(json.dumps(result))
        return
    if args.quick:
        args.steps, args.warmup, args.minutes, args.eval_every = 5, 2, 0.2, 10
        args.rounds, args.attention_repeats = 1, 1

    import platform
    import torch
    from basegpt.devices import cpu_bf16_instructions
    print(f"# training benchmark: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, bf16 instructions: {cpu_bf16_instructions() or 'none'}, "
          f"Python {platform.python_version()}, torch {torch.__version__}")
    print(f"# model {SIZE}, batch {BATCH} x {T}, vocab {VOCAB}, text {args.text.name}\n")
    if not args.curves_only:
        attention_kernels(args)
        if args.attention_only:
            return
        speed_levers(args)
    if not args.speed_only:
        curves(args)


def attention_kernels(args) -> None:
    """Part 0: one attention layer's forward + backward in the manual kernel's steps and in
    torch's fused kernel, fp32 and bf16, from T = 64 to 1024 (batch x heads shrinking as T
    grows). The bf16 rows are why fit hands CPU bf16 training of up to
    CPU_LOW_PRECISION_MANUAL_MAX_KEYS keys to the manual steps on CPUs with bf16
    instructions, and only there."""
    import torch
    import torch.nn.functional as F
    from basegpt.devices import cpu_bf16_instructions
    from basegpt.fast.attention import CPU_LOW_PRECISION_MANUAL_MAX_KEYS
    from basegpt.model.attention import attention_manual
    print("## Attention kernels: forward + backward of one layer, ms (head width 64)\n")
    print("| T | batch x heads | fp32 manual | fp32 fused | bf16 manual | bf16 fused |")
    print("|---:|---:|---:|---:|---:|---:|")
    kernels = {"manual": lambda q, k, v: attention_manual(q, k, v)[0],
               "fused": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)}
    for length, B, H in ((64, 32, 4), (128, 16, 4), (256, 8, 8), (512, 4, 8), (1024, 2, 12)):
        cells = []
        for dtype in (torch.float32, torch.bfloat16):
            torch.manual_seed(0)
            q, k, v = (torch.randn(B, H, length, 64, dtype=dtype, requires_grad=True)
                       for _ in range(3))
            grad = torch.randn(B, H, length, 64, dtype=dtype)
            for kernel in kernels.values():
                def one() -> None:
                    kernel(q, k, v).backward(grad)
                one()
                best = float("inf")
                for _ in range(args.attention_repeats):
                    start = time.perf_counter()
                    one()
                    best = min(best, time.perf_counter() - start)
                cells.append(f"{best * 1e3:.1f}")
        print(f"| {length} | {B} x {H} | " + " | ".join(cells) + " |", flush=True)
    where = ("this CPU has them" if cpu_bf16_instructions()
             else "not this one: here it keeps the fused kernel")
    print(f"\n(fit's sdpa layers run the manual steps for bf16 / fp16 training up to "
          f"{CPU_LOW_PRECISION_MANUAL_MAX_KEYS} keys on CPUs with bf16 instructions; {where})\n")


def speed_levers(args) -> None:
    """Part 1: tokens/s of every SPEED_RUNS and HF_RUNS entry, one subprocess each, in
    args.rounds rounds that take turns (so a slow spell of the machine hits every entry of a
    round, not all rounds of one entry); the table gives each entry's best round and the ratio
    of its median to the HF fp32 loop's. args.only keeps the runs whose label contains one of
    its strings (and the HF fp32 loop)."""
    jobs = [("basegpt", name, threads) for name, (_, _, threads) in SPEED_RUNS.items()]
    jobs += [("hf", name, 2) for name in HF_RUNS]
    if args.only:
        jobs = [job for job in jobs if any(part in job[1] for part in args.only)]
        if not any(name == HF_BASELINE for _, name, _ in jobs):
            jobs.append(("hf", HF_BASELINE, 2))             # the ratios' denominator
    rates: dict[str, list[float]] = {name: [] for _, name, _ in jobs}
    first: dict[str, float] = {}
    errors: dict[str, str] = {}
    for i in range(args.rounds):
        for kind, name, threads in jobs:
            r = run(kind, name, args, threads)
            if "error" in r:
                errors[name] = r["error"]
                continue
            rates[name].append(r["tokens_per_s"])
            first.setdefault(name, r["first_step_s"])
        print(f"(round {i + 1} of {args.rounds} done)", flush=True)
    print(f"\n## Speed levers (tokens/s of training steps after warmup, best of {args.rounds} "
          "rounds)\n")
    # On a machine whose speed drifts, one lucky round can decide a best-of ratio, so the
    # ratio of the medians stands beside it.
    print("| run | tokens/s | vs HF fp32 loop | medians' ratio | every round | first step s |")
    print("|---|---:|---:|---:|---|---:|")
    hf = max(rates[HF_BASELINE], default=None)
    hf_median = statistics.median(rates[HF_BASELINE]) if rates[HF_BASELINE] else None
    for _, name, _ in jobs:
        if not rates[name]:
            print(f"| {name} | error: {errors.get(name, '?')} | | | | |")
            continue
        best = max(rates[name])
        ratio = f"{best / hf:.2f}x" if hf else "?"
        median = f"{statistics.median(rates[name]) / hf_median:.2f}x" if hf_median else "?"
        rounds = ", ".join(f"{x:,.0f}" for x in rates[name])
        print(f"| {name} | {best:,.0f} | {ratio} | {median} | {rounds} | {first[name]:.1f} |")


def curves(args) -> None:
    """Part 2: validation bits per byte against training seconds, basegpt and HF; a PNG."""
    labels = [next(n for n in {**SPEED_RUNS, **CURVE_RUNS} if n.endswith(c)) for c in args.curve]
    print(f"\n## Learning at equal training time ({args.minutes:g} min each)\n")
    results = {label: run("basegpt-curve", label, args) for label in labels}
    results[HF_BASELINE] = run("hf-curve", HF_BASELINE, args)
    print("| run | final val bits/byte | best | curve points |")
    print("|---|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['final_bpb']:.4f} | {min(b for _, b in r['curve']):.4f} | "
              f"{len(r['curve'])} |" if "error" not in r else f"| {name} | error: {r['error']} | | |")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7, 4))
        for name, r in results.items():
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
