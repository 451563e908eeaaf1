"""Evaluation on held-out text: loss, perplexity and bits per byte on fixed windows.

bits per byte = total negative log-likelihood in bits / bytes of the target text. Unlike the
loss per token it does not depend on the tokenizer, so runs with different vocabularies
compare; perplexity is exp(loss per token).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from basegpt.data import IGNORE_INDEX
from basegpt.tokenizer import Tokenizer


def token_bytes(tokenizer: Tokenizer | None, vocab_size: int) -> torch.Tensor | None:
    """Bytes of text each token id stands for (special tokens: 0), for bits per byte."""
    if tokenizer is None:
        return None
    n = torch.tensor([len(b) for b in tokenizer.vocab[:vocab_size]], dtype=torch.float64)
    for token_id in tokenizer.special_tokens.values():
        if token_id < vocab_size:
            n[token_id] = 0
    return n


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: Dataset, batch_size: int, device: torch.device,
             autocast: Callable[[], Any], max_tokens: int,
             bytes_per_token: torch.Tensor | None = None) -> dict[str, float]:
    """Loss, perplexity and bits per byte on the first windows of `data`, always the same.

    bits per byte = total negative log-likelihood in bits / bytes of the target text. Unlike
    loss per token it does not depend on the tokenizer, so runs with different vocabularies
    compare. Special tokens count as 0 bytes (their NLL still counts).
    """
    was_training = model.training
    model.eval()
    n_windows = max(1, min(len(data), max_tokens // max(window_len(data), 1)))
    nll, count, n_bytes = 0.0, 0, 0.0
    for start in range(0, n_windows, batch_size):
        xs, ys = zip(*(data[i] for i in range(start, min(start + batch_size, n_windows))))
        x, y = torch.stack(xs).to(device), torch.stack(ys).to(device)
        with autocast():
            logits = model(x)
        losses = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none",
                                 ignore_index=IGNORE_INDEX)
        real = y.flatten() != IGNORE_INDEX
        nll += losses[real].double().sum().item()
        count += int(real.sum())
        if bytes_per_token is not None:
            n_bytes += target_bytes(bytes_per_token, y)
    model.train(was_training)
    loss = nll / max(count, 1)
    out = {"val_loss": loss, "val_ppl": math.exp(min(loss, 50.0)), "val_tokens": count}
    if n_bytes:
        out["val_bpb"] = nll / math.log(2) / n_bytes
    return out


def target_bytes(bytes_per_token: torch.Tensor, targets: torch.Tensor) -> float:
    """Bytes of text that `targets`' real ids stand for (IGNORE_INDEX padding left out,
    special tokens 0 bytes): the divisor of bits per byte, in evaluation and training."""
    return float(bytes_per_token[targets[targets != IGNORE_INDEX].cpu()].sum())


def window_len(data: Dataset) -> int:
    return int(data[0][0].numel())
