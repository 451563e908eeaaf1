"""What several test modules share: a tiny text and model, and the original design's usage
example (conftest.py turns TEXT into the `tokenizer` and `data` fixtures)."""

from __future__ import annotations

import signal

import torch

from basegpt import B2lM

TEXT = ("First Citizen: Before we proceed any further, hear me speak. All: Speak, speak. "
        "First Citizen: You are all resolved rather to die than to famish? ") * 12

# The original design's usage example, which the README and examples/seed_snippet.py must
# hold verbatim.
ORIGINAL_SNIPPET = ("tokenizer = Tokenizer(vocab_size=500)\n"
                    "tokenizer.trainTokenizer(text)\n\n"
                    "dataset = SlidingWindowDataset(tokenizer=tokenizer, n_context=64, texts=[text])\n"
                    "loader = DataLoader(dataset, batch_size=32, shuffle=True)\n\n"
                    "model = B2lM(vocab_size=len(tokenizer), n_embed=128, n_block=4,\n"
                    "             n_k=32, n_v=32, n_head=4, n_ff=256)\n"
                    "model.train(loader, epochs=10)\n")


def tiny(tokenizer, **kw) -> B2lM:
    """A 2-block, 32-wide model for `tokenizer` (seeded: the same weights every call)."""
    torch.manual_seed(0)
    base = dict(vocab_size=len(tokenizer), n_embed=32, n_block=2, n_head=2, n_k=16, n_v=16,
                n_ff=64, n_context=16)
    return B2lM(**{**base, **kw})


def default_ctrl_c() -> None:
    """Popen's preexec_fn for a child a test stops with SIGINT: Ctrl-C acts as at a terminal
    even when the test run itself was started in the background, where the shell starts it
    with SIGINT ignored and every child inherits that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
