"""Forward+backward throughput of B2lM vs Hugging Face GPT2LMHeadModel, on the CPU, in one run.

    python benchmarks/bench_model.py                 # both sizes, prints a markdown table
    python benchmarks/bench_model.py --sizes seed --rounds 5

For a like-for-like comparison B2lM is configured as GPT-2 ("gpt2-style": pre-norm LayerNorm,
learned positions, tanh-GELU MLP of width 4C, biases, tied head), which gives exactly the
parameter count of GPT2LMHeadModel at the same size (the table shows both). The seed's default
architecture (post-norm, sinusoidal, ReLU, untied head) is timed too at the seed's size.
Both models start from random weights (no download); dropout is 0 in both. One step is
logits = model(ids); loss = cross_entropy(logits, targets); loss.backward() (no optimizer).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from basegpt import B2lM  # laid out as users get it (basegpt.fast)
from basegpt.config import ModelConfig

VOCAB = 4096

SIZES = {
    # name: (n_block, n_embed, n_head, head width, n_ff, context, batch)
    "seed": (4, 128, 4, 32, 256, 64, 32),
    "gpt2-small": (12, 768, 12, 64, 3072, 256, 4),
}


def b2lm(size: str, style: str, kernel: str) -> B2lM:
    L, C, H, D, F_, T, _ = SIZES[size]
    common = dict(vocab_size=VOCAB, n_context=T, n_block=L, n_embed=C, n_head=H, n_k=D, n_v=D,
                  n_ff=F_, attention=kernel)
    if style == "gpt2-style":
        common |= dict(norm_position="pre", positional="learned", activation="gelu", tie_weights=True)
    return B2lM(ModelConfig(**common))


def hf_gpt2(size: str, attn_implementation: str) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    L, C, H, _, F_, T, _ = SIZES[size]
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=T, n_embd=C, n_layer=L, n_head=H, n_inner=F_,
                     activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     bos_token_id=None, eos_token_id=None)   # GPT-2's 50256 is outside this vocab
    cfg._attn_implementation = attn_implementation
    model = GPT2LMHeadModel(cfg)

    class Logits(torch.nn.Module):                   # same call as B2lM: ids -> logits
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.inner(input_ids=ids, use_cache=False).logits

    return Logits()


def make_batch(size: str) -> tuple[torch.Tensor, torch.Tensor]:
    *_, T, B = SIZES[size]
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, VOCAB, (B, T), generator=g), torch.randint(0, VOCAB, (B, T), generator=g)


def step_seconds(model: torch.nn.Module, ids: torch.Tensor, targets: torch.Tensor) -> float:
    """Seconds for one forward+backward step."""
    t0 = time.perf_counter()
    logits = model(ids)                                                  # (B, T, V)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per model per round (default: 5 at the seed size, 2 at gpt2-small)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each round times every model in turn")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    args = parser.parse_args()

    torch.manual_seed(0)
    print(f"torch {torch.__version__}, python {platform.python_version()}, "
          f"{torch.get_num_threads()} threads, vocab {VOCAB}; per model: {args.warmup} warm-up steps, "
          f"then {args.rounds} rounds of timed steps (5 per round at seed size, 2 at gpt2-small unless --steps), models interleaved\n")
    print("| size | model | attention | params | tokens/s (median) | tokens/s (best) |")
    print("|---|---|---|---:|---:|---:|")
    for size in args.sizes:
        L, C, H, D, F_, T, B = SIZES[size]
        label = f"{size} ({L}x{C}, {H} heads, ctx {T}, batch {B})"
        runs: list[tuple[str, str, Callable[[], torch.nn.Module]]] = [
            ("B2lM gpt2-style", "manual", lambda: b2lm(size, "gpt2-style", "manual")),
            ("B2lM gpt2-style", "sdpa", lambda: b2lm(size, "gpt2-style", "sdpa")),
            ("HF GPT2LMHeadModel", "eager", lambda: hf_gpt2(size, "eager")),
            ("HF GPT2LMHeadModel", "sdpa", lambda: hf_gpt2(size, "sdpa")),
        ]
        if size == "seed":
            runs.insert(0, ("B2lM seed default", "sdpa", lambda: b2lm(size, "default", "sdpa")))
        steps = args.steps or (5 if size == "seed" else 2)
        models = [build().train() for _, _, build in runs]
        ids, targets = make_batch(size)
        # Warm-up matters on a VM: the first steps of a process fault in fresh memory pages and
        # run many times slower. Interleaving the models over rounds spreads any drift in the
        # machine's speed (other processes, frequency) evenly over them.
        for model in models:
            for _ in range(args.warmup):
                step_seconds(model, ids, targets)
        times: list[list[float]] = [[] for _ in models]
        for _ in range(args.rounds):
            for i, model in enumerate(models):
                times[i] += [step_seconds(model, ids, targets) for _ in range(steps)]
        for (name, attention, _), model, t in zip(runs, models, times):
            params = sum(p.numel() for p in model.parameters())
            print(f"| {label} | {name} | {attention} | {params:,} | {B * T / statistics.median(t):,.0f} "
                  f"| {B * T / min(t):,.0f} |", flush=True)
        del models


if __name__ == "__main__":
    main()
