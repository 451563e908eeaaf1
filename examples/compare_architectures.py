"""Two architectures, the same data, the same steps: which learns faster?

    python examples/compare_architectures.py                       # a few minutes on 2 cores
    python examples/compare_architectures.py --quick --out /tmp/c  # a few seconds
    basegpt plot runs/compare/post-ln-sinusoidal-relu runs/compare/pre-ln-rope-swiglu

"post-ln-sinusoidal-relu" is the original design's block (LayerNorm after each residual add,
sinusoidal positions, a ReLU MLP); "pre-ln-rope-swiglu" is the modern recipe (RMSNorm before
each sublayer, rotary positions, a SwiGLU MLP, whose third matrix makes it ~15% larger).
Everything else is equal: widths, heads, tokenizer, training windows and their order (same
seed), validation windows, steps, and the learning rate, 1e-3 as in the seed preset (at 3e-3
the post-LN model stalled at the unigram loss in one of our runs while pre-LN trained on, as
Xiong et al. (2020) would predict). Each trains with `basegpt.train.fit(..., run_dir=...)` into
its own run directory, and `basegpt.plot.plot_runs` overlays their loss curves in
OUT/compare.png. The runs are ordinary run directories: `basegpt info`, `basegpt eval` and
`basegpt attention` work on them.
"""

import argparse
from pathlib import Path

from basegpt import B2lM, SlidingWindowDataset, Tokenizer, builtin_corpus
from basegpt.plot import plot_runs
from basegpt.train import fit

ARCHITECTURES = {
    "post-ln-sinusoidal-relu": dict(norm_position="post", norm="layernorm",
                                    positional="sinusoidal", activation="relu"),
    "pre-ln-rope-swiglu": dict(norm_position="pre", norm="rmsnorm",
                               positional="rope", activation="swiglu"),
}

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", type=Path, default=Path("runs/compare"), help="folder for the runs")
parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run")
parser.add_argument("--quick", action="store_true", help="tiny model and data, for tests")
args = parser.parse_args()

n_bytes, vocab, steps = (60_000, 300, 6) if args.quick else (400_000, 1024, 300)
steps = args.steps or steps
size = (dict(n_block=1, n_embed=32, n_head=2, n_k=16, n_v=16, n_ff=64, n_context=32) if args.quick
        else dict(n_block=4, n_embed=128, n_head=4, n_k=32, n_v=32, n_ff=256, n_context=64))

documents = list(builtin_corpus(n_bytes))                   # stdlib .py files, one per document
held_out = max(1, len(documents) // 10)
tokenizer = Tokenizer(vocab_size=vocab)
tokenizer.train(documents[:-held_out], progress=False)
T = size["n_context"]
train_data = SlidingWindowDataset(tokenizer, T, documents[:-held_out], join_texts=True)
val_data = SlidingWindowDataset(tokenizer, T, documents[-held_out:], join_texts=True)
print(f"data: {len(train_data)} training and {len(val_data)} validation windows of {T} tokens, "
      f"vocabulary {len(tokenizer)}; {steps} steps each")

runs = []
for name, choices in ARCHITECTURES.items():
    model = B2lM(vocab_size=len(tokenizer), **size, **choices)
    result = fit(model, train_data, val_data, tokenizer=tokenizer, run_dir=args.out / name,
                 progress=False, max_steps=steps, batch_size=16, lr=1e-3, warmup_steps=steps // 10,
                 eval_every=max(1, steps // 3), eval_tokens=2048 if args.quick else 16384, seed=0)
    last = result.evals[-1]
    print(f"{name:<24} {model.num_parameters():>9,} parameters  val loss {last['val_loss']:.4f}  "
          f"bits per byte {last['val_bpb']:.4f}  ({result.seconds:.1f} s)")
    runs.append(args.out / name)

print(f"wrote {plot_runs(runs, args.out / 'compare.png')}")
