"""Optimization: Adam or AdamW, the learning-rate schedule, and the budgets that end a run.

    lr(step) = lr * (step + 1) / warmup_steps                    during warmup
             = lr_min + (lr - lr_min) * (1 + cos(pi * p)) / 2    after it (cosine; p in [0, 1])

p is how much of the run after warmup is done: by steps when their number is known (max_steps,
epochs), by the clock under a time budget (max_minutes), whichever is further. The same
budgets decide when training stops (stop_reason); each counts the whole run, resumes included.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from basegpt.config import TrainConfig


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


def decay_progress(config: TrainConfig, step: int, total: int | None, elapsed: float) -> float:
    """Fraction of the decay phase done: by steps if their number is known, else by the clock."""
    done = []
    if total is not None:
        done.append((step - config.warmup_steps) / max(total - config.warmup_steps, 1))
    if config.max_minutes is not None:
        done.append(elapsed / (config.max_minutes * 60))
    return max(done) if done else 0.0


def planned_steps(config: TrainConfig, steps_per_epoch: int) -> int | None:
    candidates = []
    if config.max_steps is not None:
        candidates.append(config.max_steps)
    if config.epochs is not None:
        candidates.append(max(1, math.ceil(config.epochs * steps_per_epoch)))
    return min(candidates) if candidates else None


def stop_reason(config: TrainConfig, step: int, total: int | None, elapsed: float) -> str:
    """Why training should stop now ("" = go on), from the step count and the agreed clock;
    a signal is voted on separately (see fit). total: the steps in the epochs budget, or None
    where it is not known yet (recipe.train_run asks before fit has counted the data)."""
    if config.max_steps is not None and step >= config.max_steps:
        return "max_steps"
    if total is not None and step >= total:
        return "epochs"
    if config.max_minutes is not None and elapsed >= config.max_minutes * 60:
        return "max_minutes"
    return ""


def fused_adam_available(device: torch.device) -> bool:
    """Whether torch has fused Adam kernels for this device: CUDA always, CPU from torch 2.4."""
    if device.type == "cuda":
        return True
    major, minor = (int(part) for part in torch.__version__.split(".")[:2])
    return device.type == "cpu" and (major, minor) >= (2, 4)


def make_optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """Adam, or AdamW with weight decay on weight matrices only.

    Decay pulls weights toward zero; that regularises the matrices of the linear layers but
    would only distort embeddings (rows are looked up, not multiplied), norm gains and biases.
    Kernels: fused (the whole update of every parameter in one kernel) on CUDA, and on CPU
    from torch 2.4, where it makes the same update up to rounding (a test feeds both the
    same gradients) and halves the optimizer's time (BENCHMARKS.md, training); foreach
    (multi-tensor) elsewhere.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    kwargs: dict[str, Any] = {"lr": config.lr, "betas": (config.beta1, config.beta2)}
    if fused_adam_available(device):
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


def optimizer_kernels(optimizer: torch.optim.Optimizer) -> str:
    """ "adamw, fused kernels" etc., for the summary."""
    kind = "fused" if optimizer.defaults.get("fused") else (
        "foreach" if optimizer.defaults.get("foreach") else "for-loop")
    return f"{type(optimizer).__name__.lower()}, {kind} kernels"
