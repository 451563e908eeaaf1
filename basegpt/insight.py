"""Looking at a trained run: its scores on any text, what it is made of, and where it attends.

    evaluate_run(run_dir, source)        loss, perplexity, bits per byte on text, files or shards
    run_info(run_dir)                    config, parameters per component, progress, tokenizer
    parameter_counts(model)              the parameter table that run_info reports
    attention_maps(model, tok, prompt)   the prompt's tokens and each layer's (H, T, T) weights
    plot_attention(tokens, maps, out)    those weights as heatmaps, one panel per head

These are the library side of `basegpt eval`, `basegpt info` and `basegpt attention`; they
return plain dicts and arrays and print nothing (only basegpt/cli/ prints).

The attention weights come from the readable `manual` kernel: `model(ids,
return_attention=True)` routes every layer through `attention_manual`, which forms
softmax(q k^T / sqrt(D)) explicitly, whatever kernel the config names. The normal forward is
untouched, so a model configured with the fast `sdpa` kernel still trains and samples at full
speed (tests/test_model_attention.py holds both paths to the same logits).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from basegpt._optional import require
from basegpt.model import B2lM
from basegpt.model.b2lm import nonfinite_message
from basegpt.tokenizer import Tokenizer

DEFAULT_EVAL_TOKENS = 262_144
"""Tokens scored by evaluate_run when neither the caller nor the run's config says."""


# ------------------------------------------------------------------------ eval

def evaluate_run(run_dir: str | os.PathLike, source: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
                 *, text: str | None = None, split: str = "val", max_tokens: int | None = None,
                 batch_size: int | None = None, device: str = "auto") -> dict[str, Any]:
    """Score a run's model on held-out text: mean loss (nats/token), perplexity, bits per byte.

    What is scored (one of):
      - `text`: a string;
      - `source`: text files, folders or globs (each file one document, joined with the
        end-of-text token as in training), or a folder made by `basegpt prepare` (its `split`);
      - nothing: the run's own validation data, the shards `basegpt train` made for it
        (prepared again from the cache if needed), so the result equals the run's last val_loss.

    The first `max_tokens` tokens are scored (default: the run's eval_tokens, else 262,144), in
    windows of n_context tokens. Bits per byte = total NLL in bits / bytes of the scored text,
    so runs with different tokenizers compare.

        evaluate_run("runs/laptop")["bits_per_byte"]          # -> e.g. 2.31
    """
    from basegpt.checkpoint import load_run
    from basegpt.devices import autocast, pick_device
    from basegpt.evaluation import evaluate, token_bytes

    # Checked before anything loads; only None means "the run's own setting" (0 is an error,
    # not a request for the default).
    for name, value in (("max_tokens", max_tokens), ("batch_size", batch_size)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    run = load_run(run_dir)
    train_config = run.config.get("train") or {}
    if max_tokens is None:
        max_tokens = train_config.get("eval_tokens") or DEFAULT_EVAL_TOKENS
    if batch_size is None:
        batch_size = train_config.get("batch_size") or 32
    data, what = _eval_data(run, source, text, split)
    torch_device = pick_device(device)
    model = run.model.to(torch_device)
    scores = evaluate(model, data, batch_size, torch_device, autocast(torch_device, torch.float32),
                      max_tokens, token_bytes(run.tokenizer, model.config.vocab_size))
    if not math.isfinite(scores["val_loss"]):
        raise ValueError(nonfinite_message(model, f"the loss of {run_dir} on {what}"))
    out = {"loss": scores["val_loss"], "perplexity": scores["val_ppl"],
           "bits_per_byte": scores.get("val_bpb"), "tokens": scores["val_tokens"],
           "source": what, "run_dir": str(run_dir)}
    return out


def _eval_data(run: Any, source: Any, text: str | None, split: str) -> tuple[Any, str]:
    """The dataset to score and a short description of it."""
    from basegpt.data import ShardDataset, SlidingWindowDataset

    T = run.model.config.n_context
    sources = [] if source is None else [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if text is not None and sources:
        raise ValueError("give either text or files to evaluate on, not both")
    if text is not None:
        try:
            data = SlidingWindowDataset(run.tokenizer, T, [text])
        except ValueError:              # its only refusal here: no window, under 2 tokens
            n = len(run.tokenizer.encode(text))
            raise ValueError(f"the text to score, {text!r}, is {n} token(s) long; scoring needs "
                             "at least 2 (each token is predicted from the ones before it): "
                             "give a longer text") from None
        return data, f"text ({len(text.encode('utf-8')):,} bytes)"
    if len(sources) == 1 and (Path(sources[0]) / "meta.json").is_file():
        folder = Path(sources[0])
        return ShardDataset(folder, T, split, tokenizer=run.tokenizer), f"{folder} ({split} split)"
    if sources:
        from basegpt.corpus import expand_paths, read_text_file
        files = expand_paths(sources)
        texts = [read_text_file(f) for f in files]
        size = sum(len(t.encode("utf-8")) for t in texts)
        return (SlidingWindowDataset(run.tokenizer, T, texts, join_texts=True),
                f"{len(files)} file(s) ({size:,} bytes)")
    # The run's own validation split: the cached shards of its training data.
    from basegpt.config import DataConfig
    from basegpt.recipe import get_shards
    spec = run.config.get("spec")
    if spec is None:
        raise ValueError(f"{run.path} was not made by `basegpt train`, so it does not say what "
                         "its validation data was; pass text files, --text or a prepared folder")
    data = DataConfig(**spec["data"])
    shards = get_shards(data, run.tokenizer, progress=False, log=lambda m: None)
    return ShardDataset(shards, T, split, tokenizer=run.tokenizer), f"the run's {split} split"


# ------------------------------------------------------------------------ info

def parameter_counts(model: B2lM) -> dict[str, Any]:
    """Parameters per component; the parts add up to `total` (a tied head counts once).

        {"embedding": V*C (+ learned positions), "blocks": [{"attention", "feedforward",
         "norms", "total"}, ...], "final_norm": ..., "head": V*C or 0 when tied, "total": ...}
    """
    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    blocks = []
    for block in model.blocks:
        row = {"attention": count(block.attn), "feedforward": count(block.ff),
               "norms": count(block.attn_norm) + count(block.ff_norm)}
        row["total"] = count(block)
        blocks.append(row)
    tied = model.lm_head.weight is model.tok_emb.weight
    counts = {"embedding": count(model.tok_emb), "positional": count(model.positional),
              "blocks": blocks, "final_norm": count(model.final_norm),
              "head": 0 if tied else count(model.lm_head), "tied_head": tied}
    counts["total"] = model.num_parameters()
    counts["without_embeddings"] = model.num_parameters(exclude_embeddings=True)
    return counts


def run_info(run_dir: str | os.PathLike) -> dict[str, Any]:
    """What a run directory holds, without loading its weights.

    Returns {"run_dir", "model" (ModelConfig dict), "train" (TrainConfig dict), "spec" (or None),
    "parameters" (parameter_counts), "progress" (steps, tokens, epoch, seconds, last train
    loss, last evaluation), "best" (best/best.json or None), "tokenizer" (size, merges,
    pattern, special tokens, hash, whether it matches the model's), "checkpoints" (kept steps),
    "init_from" (the run a fine-tuning run started from, as config.json records it, or None)}.
    """
    from basegpt.checkpoint import TOKENIZER_FILE, read_config
    from basegpt.config import ModelConfig
    from basegpt.rundir import latest_checkpoint, list_checkpoints
    from basegpt.train_state import STATE_JSON, read_metrics

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    model_config = ModelConfig.from_dict(config["model"])
    with torch.device("meta"):            # shapes only: counting needs no memory and no weights
        model = B2lM(model_config)
    tokenizer = Tokenizer.load(run_dir / TOKENIZER_FILE)

    metrics = read_metrics(run_dir)
    newest, _ = latest_checkpoint(run_dir)
    state = _read_json(newest / STATE_JSON) if newest is not None else None
    progress: dict[str, Any] = {"steps": 0, "tokens": 0, "epoch": None, "seconds": None}
    if metrics:
        last = metrics[-1]
        progress.update(steps=last.get("step", 0), tokens=last.get("tokens", 0),
                        epoch=last.get("epoch"), seconds=last.get("seconds"),
                        train_loss=last.get("train_loss"))
    if state and "progress" in state:     # the saved checkpoint is the authority on the step
        saved = state["progress"]
        progress.update(steps=saved.get("step", progress["steps"]),
                        tokens=saved.get("tokens", progress["tokens"]),
                        seconds=saved.get("seconds", progress["seconds"]))
    evals = [r for r in metrics if "val_loss" in r]
    if evals:
        progress["last_eval"] = {k: evals[-1][k] for k in ("step", "val_loss", "val_ppl", "val_bpb")
                                 if k in evals[-1]}
    return {
        "run_dir": str(run_dir),
        "model": model_config.to_dict(),
        "train": config.get("train") or {},
        "spec": config.get("spec"),
        "parameters": parameter_counts(model),
        "progress": progress,
        "best": _read_json(run_dir / "best" / "best.json"),
        "tokenizer": {"size": len(tokenizer), "merges": len(tokenizer.merges),
                      "pattern": tokenizer.splitter.name,
                      "special_tokens": dict(tokenizer.special_tokens),
                      "hash": tokenizer.hash,
                      "matches_model": tokenizer.hash == config.get("tokenizer_hash")},
        "checkpoints": [int(p.name.removeprefix("step_")) for p in list_checkpoints(run_dir)],
        "init_from": config.get("init_from"),
    }


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); the run directory is damaged") from None


# ------------------------------------------------------------------------ attention

@torch.no_grad()
def attention_maps(model: B2lM, tokenizer: Tokenizer, prompt: str
                   ) -> tuple[list[str], list[torch.Tensor]]:
    """The prompt's tokens (as display text) and every layer's attention weights.

    Returns (tokens, maps): maps[l] is a (H_l, T, T) float tensor on the CPU; maps[l][h, t] is
    how much the query at token t takes from each token s <= t (a row sums to 1; s > t is 0,
    the causal mask). Computed by the manual kernel in eval mode (no dropout).

        tokens, maps = attention_maps(model, tok, "def f(x):")   # maps[0].shape == (H, T, T)
    """
    if not isinstance(prompt, str) or not prompt:
        raise ValueError("the text is empty: attention needs at least one token to look at; "
                         "give some text, e.g. 'def f(x):'")
    ids = tokenizer.encode(prompt)
    n_context = model.config.n_context
    if len(ids) > n_context:
        raise ValueError(f"the prompt is {len(ids)} tokens but n_context is {n_context}; "
                         f"shorten it to at most {n_context} tokens")
    was_training = model.training
    model.eval()
    device = model.tok_emb.weight.device
    try:
        _, weights = model(torch.tensor([ids], device=device), return_attention=True)
    finally:
        model.train(was_training)
    maps = [w[0].float().cpu() for w in weights]                 # n_block x (H, T, T)
    return [tokenizer.token_text(i) for i in ids], maps


def plot_attention(tokens: Sequence[str], maps: Sequence[torch.Tensor], out: str | os.PathLike,
                   layer: int | None = None, head: int | None = None,
                   title: str | None = None) -> Path:
    """Draw attention weights as heatmaps into the PNG `out` (atomically); returns the path.

    One panel per (layer, head): rows are layers, columns heads. By default every layer and
    every head; `layer` keeps one layer, `head` one head (of each kept layer). In a panel, row
    t is the query token, column s the key token, colour the weight (0 white .. 1 dark); the
    upper triangle is empty because of the causal mask.
    """
    require("matplotlib", "drawing attention maps").use("Agg")
    import matplotlib.pyplot as plt

    n_layer = len(maps)
    if layer is not None and not 0 <= layer < n_layer:
        raise ValueError(f"--layer {layer} does not exist: the model has {n_layer} layer(s), "
                         f"0..{n_layer - 1}")
    layers = range(n_layer) if layer is None else [layer]
    panels = []                                                   # (row, layer, [heads])
    for row, l in enumerate(layers):
        n_head = maps[l].shape[0]
        if head is not None and not 0 <= head < n_head:
            raise ValueError(f"--head {head} does not exist: layer {l} has {n_head} head(s), "
                             f"0..{n_head - 1}")
        panels.append((row, l, list(range(n_head)) if head is None else [head]))
    n_rows, n_cols = len(panels), max(len(h) for _, _, h in panels)

    T = len(tokens)
    labels = [_label(t) for t in tokens]
    side = min(max(2.2, 0.22 * T + 1.0), 8.0)                     # inches per panel
    font = max(4.0, min(9.0, 160 / max(T, 1)))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(side * n_cols + 0.6, side * n_rows + 0.4),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")                                            # unused cells stay blank
    image = None
    for row, l, heads in panels:
        for col, h in enumerate(heads):
            ax = axes[row][col]
            ax.axis("on")
            image = ax.imshow(maps[l][h].numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
            ax.set_title(f"layer {l}, head {h}", fontsize=9)
            ax.set_xticks(range(T), labels, rotation=90, fontsize=font)
            ax.set_yticks(range(T), labels, fontsize=font)
            ax.set_xlabel("key (attended to)", fontsize=8)
            ax.set_ylabel("query", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6, label="attention weight")
    from basegpt.plot import save_figure
    return save_figure(fig, out)


def _label(token: str) -> str:
    """A token as an axis label: spaces made visible (a leading space is most of BPE's
    information), long tokens shortened."""
    text = token.replace(" ", "\u00b7")                          # middle dot
    return text if len(text) <= 12 else text[:11] + "\u2026"


def attention_summary(tokens: Sequence[str], maps: Sequence[torch.Tensor]) -> list[dict[str, Any]]:
    """Per layer and head, where the last token looks most and how spread the weights are.

    entropy (bits) of the last query's row: 0 = all weight on one token, log2(T) = uniform.
    """
    rows = []
    for l, m in enumerate(maps):
        for h in range(m.shape[0]):
            last = m[h, -1]                                          # (T,) the last query's row
            p = last.clamp_min(1e-12)
            rows.append({"layer": l, "head": h, "top_token": tokens[int(last.argmax())],
                         "top_weight": float(last.max()),
                         "entropy_bits": float(-(last * p.log2()).sum()),
                         "uniform_bits": math.log2(len(tokens))})
    return rows
