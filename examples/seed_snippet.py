"""The original design's usage example, verbatim, on a small text.

    python examples/seed_snippet.py            # ~40 KB of the Python standard library
    python examples/seed_snippet.py --quick    # ~12 KB: a few seconds

The block between the two rulers is the snippet exactly as the original design wrote it;
around it we only pick a text and measure the loss after training, next to the loss of a
model that guesses uniformly (ln of the vocabulary size), so you can see it learned something.
"""

import argparse
import math

import torch
import torch.nn.functional as F

from basegpt import B2lM, SlidingWindowDataset, Tokenizer, builtin_corpus
from torch.utils.data import DataLoader


def mean_loss(model, dataset):
    """Cross-entropy per target token over every window (padding targets are -100: skipped)."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in DataLoader(dataset, batch_size=64):
            logits = model(x)                                              # (B, T, V)
            total += F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-100,
                                     reduction="sum").item()
            count += int((y != -100).sum())
    return total / count


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="a smaller text, for tests")
args = parser.parse_args()
torch.manual_seed(0)
text = "".join(builtin_corpus(12_000 if args.quick else 40_000))       # stdlib .py files

# ---------------------------------------------------------------- the original snippet
tokenizer = Tokenizer(vocab_size=500)
tokenizer.trainTokenizer(text)

dataset = SlidingWindowDataset(tokenizer=tokenizer, n_context=64, texts=[text])
loader = DataLoader(dataset, batch_size=32, shuffle=True)

model = B2lM(vocab_size=len(tokenizer), n_embed=128, n_block=4,
             n_k=32, n_v=32, n_head=4, n_ff=256)
model.train(loader, epochs=10)
# ---------------------------------------------------------------- end of the snippet

after = mean_loss(model, dataset)
print(f"text: {len(text.encode('utf-8')):,} bytes -> {len(dataset)} windows of 64 tokens, "
      f"vocabulary {len(tokenizer)}, model {model.num_parameters():,} parameters")
print(f"uniform guess:        {math.log(len(tokenizer)):.4f}  (ln {len(tokenizer)})")
print(f"loss after 10 epochs: {after:.4f}")
