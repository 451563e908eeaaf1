"""The training loop: next-token prediction with cross-entropy, from one DataLoader to resumable runs.

    fit(model, train_data, val_data, config) -> TrainResult

One step = one optimizer update over a global batch of `batch_tokens` tokens, made of
`grad_accum` micro-batches (x world size under torchrun). For each micro-batch:

    logits = model(x)                                   # (B, T, V)
    loss   = sum of -log p(target) over real targets / real targets in the global batch
    loss.backward()                                     # gradients add up over micro-batches

Dividing by the global count (not per micro-batch) makes the accumulated gradient exactly the
gradient of the mean loss over the global batch, so batch 8 x 1 and batch 4 x 2 agree.
Padded targets (-100) never count.

Around that core: warmup + cosine/linear/constant learning rate, gradient clipping, Adam or
AdamW (decay on matrices only), mixed precision (bf16 autocast, fp16 with a gradient
scaler), torch.compile, evaluation on a fixed validation set (loss, perplexity, bits per
byte), checkpoints every N steps, Ctrl-C/SIGTERM saves and stops, exact resume
(train_state.py), DistributedDataParallel under torchrun (distributed.py), metrics.jsonl.

`model.train(loader, epochs=10)` (the original design's call) lands here too.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from basegpt._io import atomic_write_text
from basegpt.checkpoint import (WEIGHTS_FILE, load_model_tensors, load_tensors, model_tensors,
                                save_config, save_tensors, unwrap)
from basegpt.data import IGNORE_INDEX, ResumableSampler
from basegpt.model import B2lM
from basegpt.tokenizer import Tokenizer
from basegpt.train_state import STATE_JSON, load_train_state, save_train_state

METRICS_FILE = "metrics.jsonl"


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Stops at whichever of max_steps, epochs, max_minutes comes first."""

    max_steps: int | None = None        # optimizer steps
    epochs: float | None = None         # passes over the training data
    max_minutes: float | None = None    # wall-clock budget
    batch_size: int = 32                # micro-batch: sequences per forward pass (per process)
    batch_tokens: int | None = None     # global batch in tokens; None = batch_size * n_context
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = 1e-3                    # peak learning rate
    min_lr_ratio: float = 0.1           # final lr = lr * min_lr_ratio (cosine / linear)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = 0
    weight_decay: float = 0.0           # AdamW only; applied to weight matrices only
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0              # max global gradient norm; 0 = no clipping
    eval_every: int = 0                 # steps between evaluations; 0 = only at the end
    eval_tokens: int = 262_144          # validation tokens per evaluation (fixed windows)
    checkpoint_every: int = 0           # steps between checkpoints; 0 = only at the end
    keep_checkpoints: int = 2           # latest checkpoints kept in run_dir/checkpoints/
    seed: int = 0
    device: str = "auto"                # auto: cuda, then mps, then cpu
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    compile: Literal["auto", "on", "off"] = "auto"
    on_nonfinite: Literal["stop", "skip"] = "stop"
    peak_tflops: float | None = None    # for MFU; None = look the device up in PEAK_TFLOPS

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "batch_tokens", "eval_tokens"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("warmup_steps", "eval_every", "checkpoint_every", "keep_checkpoints", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        for name in ("epochs", "max_minutes"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("weight_decay and grad_clip must be >= 0")
        if self.weight_decay > 0 and self.optimizer != "adamw":
            raise ValueError(f"weight_decay={self.weight_decay} needs optimizer='adamw' (Adam "
                             "folds decay into the gradient, which is not what you want)")
        for name in ("optimizer", "schedule", "dtype", "compile", "on_nonfinite"):
            allowed = _literal_values(name)
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}: choose one of {allowed}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        valid = [f.name for f in fields(cls)]
        for key in d:
            if key not in valid:
                import difflib
                near = difflib.get_close_matches(key, valid, n=1)
                raise ValueError(f"TrainConfig: unknown key {key!r}"
                                 + (f"; did you mean {near[0]!r}?" if near else ""))
        return cls(**d)


def _literal_values(name: str) -> tuple:
    from typing import get_args, get_type_hints
    return get_args(get_type_hints(TrainConfig)[name])


@dataclass
class TrainResult:
    """What fit() returns: the history of training and evaluation, and how it ended."""

    steps: int = 0
    tokens: int = 0
    epochs: float = 0.0
    seconds: float = 0.0
    train_loss: list[tuple[int, float]] = field(default_factory=list)   # (step, loss)
    evals: list[dict[str, float]] = field(default_factory=list)
    stopped_by: str = ""                # "max_steps" | "epochs" | "max_minutes" | "signal"
    skipped_steps: int = 0
    run_dir: Path | None = None


class TrainingDiverged(ValueError):
    """The loss or the gradient became inf/NaN (on_nonfinite="stop")."""


# ------------------------------------------------------------------------ devices

PEAK_TFLOPS: dict[str, dict[str, float]] = {
    # Dense (no sparsity) tensor-core peaks from the vendors' data sheets, TFLOP/s.
    "H200": {"bfloat16": 989.0, "float16": 989.0, "float32": 67.0},
    "H100 SXM": {"bfloat16": 989.0, "float16": 989.0, "float32": 67.0},
    "H100 PCIe": {"bfloat16": 756.0, "float16": 756.0, "float32": 51.0},
    "H100": {"bfloat16": 989.0, "float16": 989.0, "float32": 67.0},
    "A100": {"bfloat16": 312.0, "float16": 312.0, "float32": 19.5},
    "L40S": {"bfloat16": 362.0, "float16": 362.0, "float32": 91.6},
    "L4": {"bfloat16": 121.0, "float16": 121.0, "float32": 30.3},
    "A10": {"bfloat16": 125.0, "float16": 125.0, "float32": 31.2},
    "V100": {"float16": 125.0, "float32": 15.7},
    "T4": {"float16": 65.0, "float32": 8.1},
}


def pick_device(name: str = "auto") -> torch.device:
    """auto: CUDA if available, then Apple's MPS, then the CPU."""
    if name != "auto":
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but CUDA is not available; "
                             "use --device cpu (or auto)")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """auto: bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU and MPS.

    CPU stays fp32 by default: see BENCHMARKS.md (bf16 autocast on CPU) for the measurement
    that decided it.
    """
    if name != "auto":
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def peak_flops(device: torch.device, dtype: torch.dtype, override_tflops: float | None) -> float | None:
    """Peak FLOP/s of the device for this dtype (None when unknown, e.g. CPUs)."""
    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    dtype_name = str(dtype).removeprefix("torch.")
    for key in PEAK_TFLOPS:            # ordered: specific names ("H100 PCIe") before "H100"
        if key in name and dtype_name in PEAK_TFLOPS[key]:
            return PEAK_TFLOPS[key][dtype_name] * 1e12
    return None


# ------------------------------------------------------------------------ data streams

class BatchStream:
    """Endless micro-batches from a Dataset in ResumableSampler order, sharded by rank.

    Each global draw takes world * batch_size indices from the sampler; rank r keeps slice r.
    The position (epoch, indices handed out) is exactly restorable, so a resumed run sees the
    same batches in the same order. The last incomplete draw of an epoch is dropped, so every
    micro-batch is full.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, rank: int = 0,
                 world: int = 1) -> None:
        per_draw = batch_size * world
        if len(dataset) < per_draw:
            raise ValueError(f"the training data has {len(dataset)} windows, fewer than one "
                             f"global micro-batch ({batch_size} x {world} processes); lower "
                             "batch_size or give more text")
        self.dataset, self.batch_size, self.rank, self.world = dataset, batch_size, rank, world
        self.sampler = ResumableSampler(dataset, seed=seed)
        self.batches_per_epoch = len(dataset) // per_draw

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        per_draw = self.batch_size * self.world
        if self.sampler.position + per_draw > self.sampler.n:       # drop the ragged tail
            self.sampler.epoch += 1
            self.sampler.position = 0
        order = self.sampler.permutation(self.sampler.epoch)
        start = self.sampler.position + self.rank * self.batch_size
        indices = order[start:start + self.batch_size]
        self.sampler.position += per_draw
        xs, ys = zip(*(self.dataset[int(i)] for i in indices))
        return torch.stack(xs), torch.stack(ys)                       # (B, T) each

    @property
    def epoch(self) -> float:
        return self.sampler.epoch + self.sampler.position / self.sampler.n

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)


class LoaderStream:
    """Endless micro-batches from a user's DataLoader (the original design's usage).

    Exact resume needs the loader's order to be reproducible; for that, pass a Dataset
    instead and fit() builds a BatchStream.
    """

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader
        self.batches_per_epoch = len(loader)
        self.epochs_done = 0
        self.position = 0
        self._it: Iterator | None = None

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._it is None:
            self._it = iter(self.loader)
        try:
            batch = next(self._it)
        except StopIteration:
            self.epochs_done += 1
            self.position = 0
            self._it = iter(self.loader)
            batch = next(self._it)
        self.position += 1
        x, y = batch
        return x, y

    @property
    def epoch(self) -> float:
        return self.epochs_done + self.position / max(self.batches_per_epoch, 1)

    def state_dict(self) -> dict:
        return {"epochs_done": self.epochs_done, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epochs_done = state["epochs_done"]
        self._it = iter(self.loader)
        for _ in range(state["position"]):           # replay to the same place
            next(self._it)
        self.position = state["position"]


def _stream(data: Any, batch_size: int, seed: int, rank: int, world: int):
    if isinstance(data, DataLoader):
        if world > 1:
            raise ValueError("under torchrun, pass a Dataset (fit shards it by rank), not a DataLoader")
        return LoaderStream(data)
    if isinstance(data, Dataset):
        return BatchStream(data, batch_size, seed, rank, world)
    raise TypeError(f"training data must be a torch Dataset or DataLoader, got {type(data).__name__}")


# ------------------------------------------------------------------------ pieces of a step

def learning_rate(config: TrainConfig, step: int, progress: float) -> float:
    """lr at `step`: linear warmup from lr/warmup to lr, then decay by `progress` in [0, 1].

        cosine:   lr_min + (lr - lr_min) * (1 + cos(pi * progress)) / 2
        linear:   lr - (lr - lr_min) * progress
        constant: lr
    with lr_min = lr * min_lr_ratio. progress is the fraction of the run done after warmup
    (by steps, or by the clock when only a time budget is set).
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = min(max(progress, 0.0), 1.0)
    low = config.lr * config.min_lr_ratio
    if config.schedule == "cosine":
        return low + (config.lr - low) * 0.5 * (1 + math.cos(math.pi * progress))
    if config.schedule == "linear":
        return config.lr - (config.lr - low) * progress
    return config.lr


def make_optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """Adam, or AdamW with weight decay on weight matrices only.

    Decay pulls weights toward zero; that regularises the matrices of the linear layers but
    would only distort embeddings (rows are looked up, not multiplied), norm gains and biases.
    fused kernels on CUDA, foreach (multi-tensor) elsewhere.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    kwargs: dict[str, Any] = {"lr": config.lr, "betas": (config.beta1, config.beta2)}
    if device.type == "cuda":
        kwargs["fused"] = True
    else:
        kwargs["foreach"] = True
    if config.optimizer == "adam":
        return torch.optim.Adam(params, **kwargs)
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    decay = [p for p in params if p.dim() >= 2 and id(p) not in embeddings]
    no_decay = [p for p in params if p.dim() < 2 or id(p) in embeddings]
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, **kwargs)


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
    n_windows = max(1, min(len(data), max_tokens // max(_window_len(data), 1)))
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
            n_bytes += bytes_per_token[y.flatten()[real].cpu()].sum().item()
    model.train(was_training)
    loss = nll / max(count, 1)
    out = {"val_loss": loss, "val_ppl": math.exp(min(loss, 50.0)), "val_tokens": count}
    if n_bytes:
        out["val_bpb"] = nll / math.log(2) / n_bytes
    return out


def _window_len(data: Dataset) -> int:
    return int(data[0][0].numel())


# ------------------------------------------------------------------------ fit

def fit(model: B2lM, train_data: Dataset | DataLoader, val_data: Dataset | None = None,
        config: TrainConfig | dict[str, Any] | None = None, *, tokenizer: Tokenizer | None = None,
        run_dir: str | os.PathLike | None = None, resume: bool = False, progress: bool = True,
        log: Callable[[str], None] | None = None,
        on_step: Callable[[dict[str, Any]], None] | None = None,
        extra_config: dict[str, Any] | None = None, **overrides: Any) -> TrainResult:
    """Train `model` on `train_data`; see the module docstring for what one step does.

    Args:
        model: a B2lM (trained in place).
        train_data: a Dataset (sampled in a seeded, resumable order) or a DataLoader.
        val_data: a Dataset evaluated every `eval_every` steps and at the end (fixed windows).
        config: a TrainConfig, a dict of its fields, or None for defaults; keyword
            `overrides` (e.g. epochs=10) replace fields.
        tokenizer: for bits per byte, and saved into run_dir. Taken from the dataset's
            `tokenizer` attribute when not given.
        run_dir: where checkpoints, metrics.jsonl and loss.png go; None = keep nothing on disk.
        resume: continue from run_dir's latest checkpoint (weights, optimizer, RNG, data).
        progress: show a tqdm bar and log messages (to stderr).
        log: where messages go instead (e.g. a list's append).
        on_step: called after every step with that step's metrics record.
        extra_config: more to record in run_dir/config.json (basegpt train stores its spec).
    """
    config = _as_config(config, overrides)
    from basegpt import distributed
    dist = distributed.setup()
    log = log or ((lambda m: tqdm.write(m, file=sys.stderr)) if progress and dist.is_main else (lambda m: None))
    torch.manual_seed(config.seed + dist.rank)
    device = pick_device(config.device) if not dist.enabled else dist.device
    dtype = pick_dtype(config.dtype, device)
    raw = unwrap(model)
    raw.to(device)
    tokenizer = tokenizer or getattr(train_data, "tokenizer", None) or getattr(
        getattr(train_data, "dataset", None), "tokenizer", None)
    stream = _stream(train_data, config.batch_size, config.seed, dist.rank, dist.world)
    T = _window_len(stream.dataset if isinstance(stream, BatchStream) else stream.loader.dataset)
    if T > raw.config.n_context:
        raise ValueError(f"the data's windows hold {T} tokens but the model's n_context is "
                         f"{raw.config.n_context}; build the model with n_context >= {T}")
    batch_size = stream.loader.batch_size if isinstance(stream, LoaderStream) else config.batch_size
    micro_tokens = batch_size * T
    accum = _grad_accum(config, micro_tokens, dist.world)
    optimizer = make_optimizer(raw, config, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    run_dir = Path(run_dir) if run_dir is not None else None
    result = TrainResult(run_dir=run_dir)
    start_step, best, elapsed_before, saved_train_seconds = 0, math.inf, 0.0, 0.0
    if resume:
        if run_dir is None:
            raise ValueError("resume=True needs run_dir (the run to continue)")
        _check_same_run(run_dir, raw, tokenizer)
        saved = _resume(run_dir, raw, optimizer, scaler, stream)
        start_step, best, elapsed_before = saved["step"], saved["best_val"], saved["seconds"]
        saved_train_seconds = saved.get("train_seconds", 0.0)
        result.tokens = saved["tokens"]
        log(f"resumed {run_dir} at step {start_step}")
    elif run_dir is not None and dist.is_main:
        if tokenizer is None:
            raise ValueError("a run directory needs the tokenizer beside the model: pass "
                             "tokenizer=... (or train on a dataset that has one)")
        run_dir.mkdir(parents=True, exist_ok=True)
        tokenizer.save(run_dir / "tokenizer.json")
        save_config(run_dir, raw.config, tokenizer, config.to_dict(), extra_config)
        (run_dir / METRICS_FILE).unlink(missing_ok=True)
    if run_dir is not None and dist.is_main:
        _record_run_info(run_dir, device, dtype, dist.world, resumed=resume)

    train_model = dist.wrap(_maybe_compile(raw, config, device, log))
    autocast = _autocast(device, dtype)
    steps_per_epoch = max(stream.batches_per_epoch // accum, 1)
    total_steps = _total_steps(config, steps_per_epoch)
    bytes_per_token = token_bytes(tokenizer, raw.config.vocab_size)
    peak = peak_flops(device, dtype, config.peak_tflops)
    flops_per_token = raw.flops_per_token()
    tokens_per_step = accum * micro_tokens * dist.world
    log(summary(raw, dataclasses.replace(config, batch_size=batch_size), device, dtype, T, accum,
                dist.world, total_steps))

    stop = _StopFlag()
    stop.install()
    model.train()
    bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step",
               disable=not (progress and dist.is_main), dynamic_ncols=True)
    clock = time.perf_counter()
    step = start_step
    train_seconds = saved_train_seconds      # time in training steps only (no evals, saves)
    try:
        while True:
            reason = _stop_reason(config, step, total_steps, stream, elapsed_before + time.perf_counter() - clock, stop)
            if reason:
                result.stopped_by = reason
                break
            step_start = time.perf_counter()
            elapsed = elapsed_before + step_start - clock
            frac = _progress(config, step, total_steps, elapsed)
            lr = learning_rate(config, step, frac)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batches = [next(stream) for _ in range(accum)]
            n_real = sum(int((y != IGNORE_INDEX).sum()) for _, y in batches)
            n_real = dist.sum(n_real)
            loss_sum = torch.zeros((), device=device)
            for i, (x, y) in enumerate(batches):
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with dist.no_sync(train_model, last=i == accum - 1), autocast():
                    logits = train_model(x)                                     # (B, T, V)
                    loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(),
                                           ignore_index=IGNORE_INDEX, reduction="sum")
                    scaled = loss * (dist.world / max(n_real, 1))
                    scaler.scale(scaled).backward()
                loss_sum += loss.detach()
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(raw.parameters(),
                                                       config.grad_clip or float("inf"))
            step_loss = dist.sum(loss_sum.item()) / max(n_real, 1)
            if not (math.isfinite(step_loss) and math.isfinite(grad_norm.item())):
                if config.on_nonfinite == "stop":
                    raise TrainingDiverged(
                        f"non-finite {'loss' if not math.isfinite(step_loss) else 'gradient'} at "
                        f"step {step}: loss {step_loss}, grad norm {grad_norm.item()}, lr {lr:.3g}; "
                        f"last good checkpoint: {_last_checkpoint(run_dir)}. Lower lr, raise "
                        "warmup_steps or grad_clip, or pass on_nonfinite='skip'")
                optimizer.zero_grad(set_to_none=True)
                scaler.update()
                result.skipped_steps += 1
                step += 1
                continue
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            result.tokens += tokens_per_step
            result.train_loss.append((step, step_loss))
            bar.update(1)
            now = time.perf_counter()
            train_seconds += now - step_start
            tok_s = tokens_per_step / max(now - step_start, 1e-9)     # this step, no evals
            postfix = {"loss": f"{step_loss:.3f}", "lr": f"{lr:.2e}", "tok/s": f"{tok_s:,.0f}"}
            record = {"step": step, "tokens": result.tokens, "epoch": round(stream.epoch, 4),
                      "train_loss": step_loss, "lr": lr, "grad_norm": grad_norm.item(),
                      "tokens_per_s": tok_s, "seconds": elapsed_before + now - clock,
                      "train_seconds": train_seconds}
            if peak:
                record["mfu"] = flops_per_token * tok_s / peak
                postfix["mfu"] = f"{record['mfu']:.1%}"
            bar.set_postfix(postfix)
            refresh_plot = False
            at_end = bool(_stop_reason(config, step, total_steps, stream,
                                       elapsed_before + now - clock, stop))
            if val_data is not None and ((config.eval_every and step % config.eval_every == 0) or at_end):
                scores = evaluate(raw, val_data, config.batch_size, device, autocast,
                                  config.eval_tokens, bytes_per_token)
                record.update(scores)
                result.evals.append({"step": step, "tokens": result.tokens, **scores})
                log(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()
                                                  if k != "val_tokens"))
                refresh_plot = True
            if dist.is_main and run_dir is not None:
                _append_metrics(run_dir, record)
            is_best = "val_loss" in record and record["val_loss"] < best
            if is_best:
                best = record["val_loss"]
            if run_dir is not None and dist.is_main and (
                    at_end or (config.checkpoint_every and step % config.checkpoint_every == 0)):
                _save_checkpoint(run_dir, raw, optimizer, scaler, stream, config, step,
                                 result.tokens, best, elapsed_before + now - clock, is_best,
                                 train_seconds)
            if refresh_plot and run_dir is not None and dist.is_main:
                _plot(run_dir, log)                  # after metrics.jsonl has this eval
            if on_step is not None:
                on_step(record)
    finally:
        stop.uninstall()
        bar.close()
    result.steps = step
    result.epochs = stream.epoch
    result.seconds = elapsed_before + time.perf_counter() - clock
    if result.stopped_by == "signal" and run_dir is not None and dist.is_main:
        _save_checkpoint(run_dir, raw, optimizer, scaler, stream, config, step, result.tokens,
                         best, result.seconds, False, train_seconds)
        log(f"interrupted at step {step}; saved. Continue with: basegpt train --resume {run_dir}")
    model.eval()
    return result


# ------------------------------------------------------------------------ helpers of fit

def _as_config(config: TrainConfig | dict[str, Any] | None, overrides: dict[str, Any]) -> TrainConfig:
    if config is None:
        config = TrainConfig()
    elif isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    if overrides:
        valid = {f.name for f in fields(TrainConfig)}
        unknown = set(overrides) - valid
        if unknown:
            TrainConfig.from_dict(dict.fromkeys(unknown))        # raises, suggesting a name
        config = dataclasses.replace(config, **overrides)
    if config.max_steps is None and config.epochs is None and config.max_minutes is None:
        raise ValueError("nothing tells training when to stop: set max_steps, epochs or "
                         "max_minutes (e.g. model.train(loader, epochs=10))")
    return config


def _grad_accum(config: TrainConfig, micro_tokens: int, world: int) -> int:
    if config.batch_tokens is None:
        return 1
    per_pass = micro_tokens * world
    if config.batch_tokens % per_pass:
        raise ValueError(f"batch_tokens={config.batch_tokens} is not a multiple of the tokens in "
                         f"one micro-batch pass ({micro_tokens} x {world} process(es) = "
                         f"{per_pass}); use a multiple of {per_pass}")
    return config.batch_tokens // per_pass


def _total_steps(config: TrainConfig, steps_per_epoch: int) -> int | None:
    candidates = []
    if config.max_steps is not None:
        candidates.append(config.max_steps)
    if config.epochs is not None:
        candidates.append(max(1, math.ceil(config.epochs * steps_per_epoch)))
    return min(candidates) if candidates else None


def _progress(config: TrainConfig, step: int, total: int | None, elapsed: float) -> float:
    """Fraction of the decay phase done: by steps if their number is known, else by the clock."""
    done = []
    if total is not None:
        done.append((step - config.warmup_steps) / max(total - config.warmup_steps, 1))
    if config.max_minutes is not None:
        done.append(elapsed / (config.max_minutes * 60))
    return max(done) if done else 0.0


def _stop_reason(config: TrainConfig, step: int, total: int | None, stream: Any, elapsed: float,
                 stop: _StopFlag) -> str:
    if stop.raised:
        return "signal"
    if config.max_steps is not None and step >= config.max_steps:
        return "max_steps"
    if total is not None and step >= total:
        return "epochs"
    if config.max_minutes is not None and elapsed >= config.max_minutes * 60:
        return "max_minutes"
    return ""


def _autocast(device: torch.device, dtype: torch.dtype) -> Callable[[], Any]:
    if dtype == torch.float32:
        from contextlib import nullcontext
        return nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


def _maybe_compile(model: torch.nn.Module, config: TrainConfig, device: torch.device,
                   log: Callable[[str], None]) -> torch.nn.Module:
    """torch.compile when asked (auto: CUDA on Linux only, as measured in BENCHMARKS.md)."""
    wanted = config.compile == "on" or (config.compile == "auto" and device.type == "cuda"
                                        and sys.platform.startswith("linux"))
    if not wanted:
        return model
    try:
        return torch.compile(model)
    except Exception as error:  # compile support varies by platform; eager always works
        log(f"warning: torch.compile failed ({type(error).__name__}: {error}); training eagerly")
        return model


def summary(model: B2lM, config: TrainConfig, device: torch.device, dtype: torch.dtype,
            T: int, accum: int, world: int, total_steps: int | None) -> str:
    """One screen: size, batch, memory estimate and the device/precision/compile decisions.

    Memory: weights + gradients (4 bytes each) + Adam's two moments (8 bytes), and activations
    per Korthikanti et al. (2022), per block ~ T*B*C*(34 + 5*H*T/C) bytes at 16-bit, doubled
    at fp32.
    """
    n = model.num_parameters()
    c = model.config
    tokens_per_step = config.batch_size * T * accum * world
    act_bytes = 2 if dtype in (torch.float16, torch.bfloat16) else 4
    act = sum(T * config.batch_size * c.n_embed * (34 + 5 * b.n_head * T / c.n_embed)
              * act_bytes / 2 for b in c.block_configs)
    act += config.batch_size * T * c.vocab_size * 4 * 2                   # logits + their grad
    mb = 1 / 2 ** 20
    steps = f"{total_steps:,}" if total_steps else "until the time budget"
    budget = f", budget {config.max_minutes:g} min" if config.max_minutes else ""
    return "\n".join([
        f"model: {n:,} parameters ({model.num_parameters(exclude_embeddings=True):,} without "
        f"embeddings), {c.n_block} blocks x {c.n_embed} wide, context {c.n_context}",
        f"batch: {config.batch_size} x {T} tokens x {accum} accumulation x {world} "
        f"process(es) = {tokens_per_step:,} tokens/step; steps: {steps}{budget}",
        f"memory estimate: weights {n * 4 * mb:.1f} MB, gradients {n * 4 * mb:.1f} MB, "
        f"Adam {n * 8 * mb:.1f} MB, activations ~{act * mb:.0f} MB",
        f"device {device}, {str(dtype).removeprefix('torch.')}, compile {config.compile}, "
        f"optimizer {config.optimizer} lr {config.lr:g} ({config.schedule}, warmup {config.warmup_steps})",
    ])


class _StopFlag:
    """Ctrl-C / SIGTERM ask the loop to stop at the next step boundary (and save); a second
    Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.raised = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.raised and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.raised = True

    def install(self) -> None:
        import threading
        if threading.current_thread() is not threading.main_thread():
            return                         # signals can only be handled in the main thread
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def _append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    # Appending one line is atomic enough: a crash can only cut the last line, and readers
    # (plot, info) skip a line that does not parse.
    with open(run_dir / METRICS_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a run's metrics.jsonl (a cut last line is skipped)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _save_checkpoint(run_dir: Path, model: B2lM, optimizer: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler, stream: Any, config: TrainConfig, step: int,
                     tokens: int, best: float, seconds: float, is_best: bool,
                     train_seconds: float) -> None:
    """checkpoints/step_N/ (kept: the latest K), then the same files at the top of run_dir
    (what generate and resume read), then best/ when validation improved."""
    progress = {"step": step, "tokens": tokens, "best_val": best if math.isfinite(best) else None,
                "seconds": seconds, "train_seconds": train_seconds, "data": stream.state_dict()}
    folder = run_dir / "checkpoints" / f"step_{step:08d}"
    folder.mkdir(parents=True, exist_ok=True)
    weights = model_tensors(model)
    meta = {"format": "pt", "step": str(step)}
    save_tensors(folder / WEIGHTS_FILE, weights, metadata=meta)
    save_train_state(folder, optimizer, scaler, progress)
    for name in (WEIGHTS_FILE, "train_state.safetensors", STATE_JSON):   # JSON last: commit record
        _atomic_copy(folder / name, run_dir / name)
    if is_best:
        _atomic_copy(folder / WEIGHTS_FILE, run_dir / "best" / WEIGHTS_FILE)
        atomic_write_text(run_dir / "best" / "best.json",
                          json.dumps({"step": step, "val_loss": best}) + "\n")
    kept = sorted((run_dir / "checkpoints").glob("step_*"))
    for old in kept[:-config.keep_checkpoints or None] if config.keep_checkpoints else kept[:-1]:
        shutil.rmtree(old, ignore_errors=True)


def _atomic_copy(source: Path, target: Path) -> None:
    from basegpt._io import atomic_write_bytes
    atomic_write_bytes(target, source.read_bytes())


def _last_checkpoint(run_dir: Path | None) -> str:
    if run_dir is None:
        return "none (no run_dir)"
    kept = sorted((run_dir / "checkpoints").glob("step_*"))
    return str(kept[-1]) if kept else "none yet"


def _check_same_run(run_dir: Path, model: B2lM, tokenizer: Tokenizer | None) -> None:
    """Resuming needs the model config and the tokenizer the run was started with."""
    from basegpt.checkpoint import read_config
    from basegpt.config import ModelConfig
    saved = read_config(run_dir)
    if ModelConfig.from_dict(saved["model"]) != model.config:
        raise ValueError(f"{run_dir} was trained with a different model config; resume with "
                         "the model built from its config.json (basegpt train --resume does)")
    if tokenizer is not None and saved.get("tokenizer_hash") != tokenizer.hash:
        raise ValueError(f"{run_dir} was trained with another tokenizer (hash "
                         f"{str(saved.get('tokenizer_hash'))[:12]}, given {tokenizer.hash[:12]}); "
                         "resume with the run's own tokenizer.json")


def _record_run_info(run_dir: Path, device: torch.device, dtype: torch.dtype, world: int,
                     resumed: bool) -> None:
    """run.json: versions, git commit, hardware and command line of each start or resume."""
    import platform
    import subprocess
    from basegpt import __version__
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "resumed": resumed,
             "command": sys.argv, "basegpt": __version__, "git_commit": commit,
             "python": platform.python_version(), "torch": torch.__version__,
             "platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
             "cpus": os.cpu_count(), "device": str(device),
             "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
             "dtype": str(dtype).removeprefix("torch."), "processes": world}
    path = run_dir / "run.json"
    history = json.loads(path.read_text(encoding="utf-8")) if path.is_file() and resumed else []
    atomic_write_text(path, json.dumps(history + [entry], indent=1) + "\n")


def _resume(run_dir: Path, model: B2lM, optimizer: torch.optim.Optimizer,
            scaler: torch.amp.GradScaler, stream: Any) -> dict[str, Any]:
    if not (run_dir / STATE_JSON).is_file():
        raise FileNotFoundError(f"{run_dir} has no checkpoint to resume ({STATE_JSON} missing)")
    progress = load_train_state(run_dir, optimizer, scaler)
    from safetensors import safe_open
    with safe_open(run_dir / WEIGHTS_FILE, "pt") as f:
        weights_step = (f.metadata() or {}).get("step")
    if weights_step != str(progress["step"]):
        raise ValueError(f"{run_dir}: {WEIGHTS_FILE} is from step {weights_step} but the "
                         f"training state from step {progress['step']} (a save was cut short); "
                         "copy a complete checkpoints/step_N/ folder's files up and resume")
    load_model_tensors(model, load_tensors(run_dir / WEIGHTS_FILE), str(run_dir / WEIGHTS_FILE))
    stream.load_state_dict(progress["data"])
    progress["best_val"] = progress["best_val"] if progress["best_val"] is not None else math.inf
    return progress


def _plot(run_dir: Path, log: Callable[[str], None]) -> None:
    try:
        from basegpt.plot import plot_runs
    except ImportError:
        return
    try:
        plot_runs([run_dir], run_dir / "loss.png")
    except ImportError as error:           # matplotlib missing: training goes on without plots
        log(f"note: no loss.png ({error})")
