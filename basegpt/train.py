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
(train_state.py), a new run from another run's weights (init_from, for fine-tuning),
DistributedDataParallel under torchrun (distributed.py), metrics.jsonl.

`model.train(loader, epochs=10)` (the original design's call) lands here too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from basegpt.checkpoint import CONFIG_FILE, init_from_run, save_config, unwrap
from basegpt.config import TrainConfig
from basegpt.data import IGNORE_INDEX
from basegpt.data.memmap import check_shard_data
from basegpt.data.streams import BatchStream, LoaderStream, make_stream
from basegpt.devices import autocast as make_autocast
from basegpt.devices import (compile_decision, dtype_decision, keep_freed_memory, peak_flops,
                             pick_device)
from basegpt.model import B2lM
from basegpt.tokenizer import Tokenizer
from basegpt.rundir import (clean_leftovers, clear_run, holds_run, last_checkpoint,
                            latest_checkpoint, save_best, save_checkpoint)
from basegpt.runlock import RunLock, run_lock
from basegpt.train_state import (METRICS_FILE, append_metrics, check_same_run, process_rng_state,
                                 read_metrics, read_run_info, record_run_info,
                                 resume as resume_from, truncate_metrics, update_train_config)

if TYPE_CHECKING:
    from basegpt.distributed import Dist

MIN_LOSS_SCALE = 1.0
"""fp16: the gradient scaler halves its scale after every overflow. Below 1 it is shrinking
the gradients, so an overflow there means they do not fit fp16 even unscaled: divergence,
not the routine overflow of a scale that is still searching for its level."""


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
    skipped_steps: int = 0              # non-finite, skipped with on_nonfinite="skip"
    overflow_steps: int = 0             # fp16: updates the gradient scaler skipped (overflow)
    run_dir: Path | None = None


class TrainingDiverged(ValueError):
    """The loss or the gradient became inf/NaN (on_nonfinite="stop")."""


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
        extra_config: dict[str, Any] | None = None,
        init_from: str | os.PathLike | None = None, overwrite: bool = False,
        **overrides: Any) -> TrainResult:
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
        init_from: a run directory whose weights the model starts from (fine-tuning an
            imported or trained run): a new run at step 0 with a fresh optimizer. The model
            must be built from that run's config.json (only dropout and kernels may differ,
            see checkpoint.init_from_run) and the tokenizer must be that run's. config.json
            and run.json record where the run started. Not with resume.
        overwrite: a new run in a run_dir that holds one replaces it (removes all of it
            first); without it, that is an error. Not with resume.

    run_dir has one writer at a time: fit holds its lock (runlock.py) while it trains, and
    another process's fit on it is an error naming this one. A resume continues from the
    newest complete checkpoint, saying which; a run that stopped before its first
    checkpoint has none, and resume=True starts it again from step 0.
    """
    if init_from is not None and resume:
        raise ValueError("init_from starts a new run from another run's weights and resume "
                         "continues a run from its own: pass one of them")
    if overwrite and resume:
        raise ValueError("overwrite replaces the run in run_dir and resume continues it: pass "
                         "one of them")
    config = _as_config(config, overrides)
    from basegpt import distributed
    dist = distributed.setup()
    log = log or ((lambda m: tqdm.write(m, file=sys.stderr)) if progress and dist.is_main else (lambda m: None))
    # One writer: only process 0 writes, so it alone holds the run directory's lock.
    writer = (run_lock(run_dir) if run_dir is not None and dist.is_main
              else contextlib.nullcontext())
    with writer as lock:
        return _fit(model, train_data, val_data, config, dist, lock, tokenizer=tokenizer,
                    run_dir=run_dir, resume=resume, overwrite=overwrite, progress=progress,
                    log=log, on_step=on_step, extra_config=extra_config, init_from=init_from)


def _fit(model: B2lM, train_data: Dataset | DataLoader, val_data: Dataset | None,
         config: TrainConfig, dist: Dist, lock: RunLock | None, *, tokenizer: Tokenizer | None,
         run_dir: str | os.PathLike | None, resume: bool, overwrite: bool, progress: bool,
         log: Callable[[str], None], on_step: Callable[[dict[str, Any]], None] | None,
         extra_config: dict[str, Any] | None, init_from: str | os.PathLike | None) -> TrainResult:
    """fit's body, with the run directory's lock held (process 0, `lock`)."""
    torch.manual_seed(config.seed + dist.rank)
    device = pick_device(config.device) if not dist.enabled else dist.device
    dtype, dtype_why = dtype_decision(config.dtype, device)
    raw = unwrap(model)
    raw.to(device)
    tokenizer = tokenizer or getattr(train_data, "tokenizer", None) or getattr(
        getattr(train_data, "dataset", None), "tokenizer", None)
    for data in (train_data, val_data):         # prepared shards: made by this tokenizer?
        check_shard_data(data, tokenizer, raw.config.vocab_size)
    source = init_from_run(raw, init_from, tokenizer) if init_from is not None else None
    if source is not None:
        extra_config = {**(extra_config or {}), "init_from": source}
        log(f"starting from the weights of {init_from}")
    stream = make_stream(train_data, config.batch_size, config.seed, dist.rank, dist.world)
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
    if resume and run_dir is None:
        raise ValueError("resume=True needs run_dir (the run to continue)")
    if lock is not None:
        _tidy_run_dir(run_dir, lock, log)
    restart = False
    if resume:
        check_same_run(run_dir, raw, tokenizer)
        read_metrics(run_dir), read_run_info(run_dir)    # damaged: an error before any write
        folder, skipped = latest_checkpoint(run_dir)
        if folder is None and skipped:
            # Committed folders are whole, so these are damaged: starting again from step 0
            # would throw them away.
            raise ValueError(f"{run_dir} has checkpoints but none is complete ("
                             + "; ".join(skipped) + "); restore a checkpoint folder, or start "
                             "the run again with overwrite=True (basegpt train --overwrite)")
        for line in skipped:
            log(f"passing over incomplete checkpoint {line}")
        if folder is None:
            log(f"{run_dir} has no complete checkpoint yet (it stopped before its first save): "
                "starting it again from step 0")
            resume, restart = False, True
    if resume:
        saved = resume_from(folder, raw, optimizer, scaler, stream, dist.rank, device)
        start_step, best, elapsed_before = saved["step"], saved["best_val"], saved["seconds"]
        saved_train_seconds = saved.get("train_seconds", 0.0)
        result.tokens = saved["tokens"]
        if dist.is_main:                     # the settings in force now, for the next resume
            update_train_config(run_dir, config.to_dict(), extra_config)
            dropped = truncate_metrics(run_dir, start_step)
            if dropped:
                log(f"metrics.jsonl: dropped {dropped} records logged after the checkpoint "
                    f"of step {start_step}; those steps are trained again")
        log(f"resumed {run_dir} at step {start_step} from {folder.relative_to(run_dir)}")
        if isinstance(stream, LoaderStream) and not stream.restorable:
            log("warning: this DataLoader draws its order from its own generator=, which a "
                "resume cannot rewind, so the batches from here on differ from an "
                "uninterrupted run's; for an exact resume drop generator= (fit seeds the "
                "shuffle itself) or pass the Dataset instead of a DataLoader")
    elif run_dir is not None and dist.is_main:
        if tokenizer is None:
            raise ValueError("a run directory needs the tokenizer beside the model: pass "
                             "tokenizer=... (or train on a dataset that has one)")
        _start_afresh(run_dir, replace=overwrite or restart, log=log)
        tokenizer.save(run_dir / "tokenizer.json")
        save_config(run_dir, raw.config, tokenizer, config.to_dict(), extra_config)
        (run_dir / METRICS_FILE).unlink(missing_ok=True)
    if run_dir is not None and dist.is_main:
        record_run_info(run_dir, device, dtype, dist.world, resumed=resume,
                        init_from=source["path"] if source else None)

    compile_on, compile_why = compile_decision(config.compile, device)
    compiled = torch.compile(raw) if compile_on else None
    train_model = dist.wrap(compiled if compiled is not None else raw)
    autocast = make_autocast(device, dtype)
    steps_per_epoch = max(stream.batches_per_epoch // accum, 1)
    total_steps = _total_steps(config, steps_per_epoch)
    bytes_per_token = token_bytes(tokenizer, raw.config.vocab_size)
    peak = peak_flops(device, dtype, config.peak_tflops)        # one device's
    flops_per_token = raw.flops_per_token(T)     # attention costs by the windows' length T
    tokens_per_step = accum * micro_tokens * dist.world
    # A CPU step frees and re-allocates its activations: keep that memory in the process.
    memory = {"memory": keep_freed_memory()} if device.type == "cpu" else {}
    log(summary(raw, dataclasses.replace(config, batch_size=batch_size), device, dtype, T, accum,
                dist.world, total_steps, decisions={
                    "dtype": dtype_why,
                    "compile": f"{'on' if compile_on else 'off'} ({compile_why})",
                    "optimizer": _optimizer_kernels(optimizer), **memory}))

    stop = _StopFlag()
    stop.install()
    model.train()
    # With only a time budget the bar counts seconds, so its ETA is the budget's end.
    by_clock = total_steps is None
    bar_total = config.max_minutes * 60 if by_clock else total_steps
    # A resume past its budget trains nothing; capped, the bar shows it full (tqdm warns
    # "clamping frac" for a start beyond its total).
    bar = tqdm(total=bar_total, initial=min(elapsed_before if by_clock else start_step, bar_total),
               desc="train",
               unit="s" if by_clock else "step", disable=not (progress and dist.is_main),
               dynamic_ncols=True, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f}{unit} "
               "[{elapsed}<{remaining}{postfix}]" if by_clock else None)
    clock = time.perf_counter()
    step = start_step
    train_seconds = saved_train_seconds      # time in training steps only (no evals, saves)
    elapsed = elapsed_before                 # run time on the clock all processes agree on
    saved_at = start_step if resume else -1  # the step of the last checkpoint written

    def checkpoint(seconds: float, is_best: bool) -> None:
        """Every process takes part (its RNG state goes into the checkpoint); rank 0 writes.
        Ctrl-C and SIGTERM wait until the checkpoint is on disk."""
        rng_ranks = dist.gather(process_rng_state(device))
        if dist.is_main:
            with stop.deferred():
                save_checkpoint(run_dir, raw, optimizer, scaler, stream, config.keep_checkpoints,
                                _progress_record(step, result.tokens, best, seconds,
                                                 train_seconds),
                                is_best, rng_ranks=rng_ranks)
    # Steps and epochs come out the same in every process; the clock and Ctrl-C do not, so
    # those are voted on inside each step's loss all-reduce (below). A process that stopped
    # on its own would leave the others waiting forever in their next collective.
    reason = stop_reason(config, step, total_steps, elapsed)
    try:
        while True:
            if stop.raised and not dist.enabled:
                reason = reason or "signal"      # one process: stop now, nothing to agree on
            if reason:
                break
            step_start = time.perf_counter()
            frac = _progress(config, step, total_steps, elapsed)
            lr = learning_rate(config, step, frac)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batches = [next(stream) for _ in range(accum)]
            n_real = sum(int((y != IGNORE_INDEX).sum()) for _, y in batches)
            n_real = dist.sum(n_real)
            try:
                loss_sum = _forward_backward(train_model, batches, n_real, device, autocast,
                                             scaler, dist)
            except Exception as error:
                if compiled is None or step > start_step:
                    raise
                # torch.compile fails lazily, in the first forward or the first compiled
                # backward; eager always works. Gradients of the failed try are dropped.
                log(f"warning: torch.compile failed ({type(error).__name__}: "
                    f"{str(error).splitlines()[0] if str(error) else ''}); training eagerly")
                optimizer.zero_grad(set_to_none=True)
                compiled, train_model = None, dist.wrap(raw)
                loss_sum = _forward_backward(train_model, batches, n_real, device, autocast,
                                             scaler, dist)
            scale = scaler.get_scale() if scaler.is_enabled() else None
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(raw.parameters(),
                                                       config.grad_clip or float("inf")).item()
            loss_total, clock_total, signals = dist.sum_all(
                [loss_sum.item(), elapsed_before + time.perf_counter() - clock, stop.raised])
            step_loss = loss_total / max(n_real, 1)
            elapsed = clock_total / dist.world           # the mean of the processes' clocks
            vote = "signal" if signals else ""
            # With fp16 an inf gradient is usually the scaler's own overflow: scaler.step()
            # then skips the update and update() halves the scale. Only a non-finite loss,
            # or overflow at a scale below MIN_LOSS_SCALE, is divergence.
            bad = not math.isfinite(step_loss) or (not math.isfinite(grad_norm)
                                                   and scale is None)
            if not bad:
                scaler.step(optimizer)
                scaler.update()
                overflow = scale is not None and scaler.get_scale() < scale
                if overflow:
                    result.overflow_steps += 1
                bad = overflow and scaler.get_scale() < MIN_LOSS_SCALE
            if bad:
                if config.on_nonfinite == "stop":
                    what = "loss" if not math.isfinite(step_loss) else "gradient"
                    floor = (f" even at loss scale {scaler.get_scale():g} (the fp16 gradient "
                             f"scaler fell below {MIN_LOSS_SCALE:g})"
                             if what == "gradient" and scale is not None else "")
                    raise TrainingDiverged(
                        f"non-finite {what} at step {step}{floor}: loss {step_loss}, grad norm "
                        f"{grad_norm}, lr {lr:.3g}; last good checkpoint: "
                        f"{last_checkpoint(run_dir)}. Lower lr, raise warmup_steps or "
                        "grad_clip, or pass on_nonfinite='skip'")
                if not math.isfinite(step_loss):   # (the scaler's overflow path has updated)
                    scaler.update()
                optimizer.zero_grad(set_to_none=True)
                result.skipped_steps += 1
                step += 1
                reason = vote or stop_reason(config, step, total_steps, elapsed)
                continue
            optimizer.zero_grad(set_to_none=True)
            step += 1
            result.tokens += tokens_per_step
            result.train_loss.append((step, step_loss))
            now = time.perf_counter()
            bar.update(min(elapsed_before + now - clock, bar.total) - bar.n if by_clock else 1)
            train_seconds += now - step_start
            tok_s = tokens_per_step / max(now - step_start, 1e-9)     # this step, no evals
            postfix = {"loss": f"{step_loss:.3f}", "lr": f"{lr:.2e}", "tok/s": f"{tok_s:,.0f}"}
            record = {"step": step, "tokens": result.tokens, "epoch": round(stream.epoch, 4),
                      "train_loss": step_loss, "lr": lr,
                      "grad_norm": grad_norm if math.isfinite(grad_norm) else None,
                      "tokens_per_s": tok_s, "seconds": elapsed_before + now - clock,
                      "train_seconds": train_seconds}
            if scale is not None:
                record["loss_scale"] = scaler.get_scale()
            if peak:
                # tok_s counts every process's tokens; MFU is per device, against one's peak.
                record["mfu"] = flops_per_token * tok_s / (peak * dist.world)
                postfix["mfu"] = f"{record['mfu']:.1%}"
            bar.set_postfix(postfix)
            refresh_plot = False
            reason = vote or stop_reason(config, step, total_steps, elapsed)
            at_end = bool(reason)
            if val_data is not None and ((config.eval_every and step % config.eval_every == 0) or at_end):
                scores = evaluate(raw, val_data, config.batch_size, device, autocast,
                                  config.eval_tokens, bytes_per_token)
                record.update(scores)
                result.evals.append({"step": step, "tokens": result.tokens, **scores})
                log(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()
                                                  if k != "val_tokens"))
                refresh_plot = True
            if dist.is_main and run_dir is not None:
                append_metrics(run_dir, record)
            is_best = "val_loss" in record and record["val_loss"] < best
            if is_best:
                best = record["val_loss"]
            # Every process reaches the same decision here (step and reason agree).
            if run_dir is not None and (at_end or (config.checkpoint_every
                                                   and step % config.checkpoint_every == 0)):
                checkpoint(elapsed_before + now - clock, is_best)
                saved_at = step
            elif run_dir is not None and is_best and dist.is_main:
                save_best(run_dir, raw, step, best)
            if refresh_plot and run_dir is not None and dist.is_main:
                _plot(run_dir, log)                  # after metrics.jsonl has this eval
            if on_step is not None:
                on_step(record)
    except BaseException:
        stop.uninstall()
        raise
    finally:
        bar.close()
    result.stopped_by = reason
    result.steps = step
    result.epochs = stream.epoch
    result.seconds = elapsed_before + time.perf_counter() - clock
    try:
        # Ended between checkpoints (on a skipped step, or by Ctrl-C between steps): save
        # it, with the handlers still installed, so that another Ctrl-C waits for the save.
        if run_dir is not None and saved_at != step:
            checkpoint(result.seconds, False)
    finally:
        stop.uninstall()
    if result.stopped_by == "signal" and run_dir is not None:
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


def _forward_backward(model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]],
                      n_real: int, device: torch.device, autocast: Callable[[], Any],
                      scaler: torch.amp.GradScaler, dist: Dist) -> torch.Tensor:
    """One step's forward and backward passes; the gradients add up in the model.

    Each micro-batch's summed loss is divided by n_real, the real targets of the whole
    global batch, and multiplied by the world size (DDP averages gradients over processes),
    so the accumulated gradient is that of the global batch's mean loss. Returns this
    process's summed loss over its real targets, () float32, unscaled.
    """
    loss_sum = torch.zeros((), device=device)
    for i, (x, y) in enumerate(batches):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with dist.no_sync(model, last=i == len(batches) - 1), autocast():
            logits = model(x)                                           # (B, T, V)
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(),
                                   ignore_index=IGNORE_INDEX, reduction="sum")
            scaler.scale(loss * (dist.world / max(n_real, 1))).backward()
        loss_sum += loss.detach()
    return loss_sum


def _tidy_run_dir(run_dir: Path, lock: RunLock, log: Callable[[str], None]) -> None:
    """What a writer does first in a run directory it now holds: say whose lock it took
    over, and remove what interrupted saves left behind."""
    if lock.previous:
        held = lock.previous
        log(f"note: the previous writer of {run_dir} (pid {held.get('pid')} on host "
            f"{held.get('host')}, since {held.get('started')}) ended without releasing its "
            "lock (killed or crashed)")
    removed = clean_leftovers(run_dir)
    if removed:
        log(f"removed what interrupted saves left in {run_dir}: {', '.join(removed)}")


def _start_afresh(run_dir: Path, replace: bool, log: Callable[[str], None]) -> None:
    """Make run_dir ready for a new run: nothing of an earlier run may stay behind for a
    later resume or load to pick up. A complete earlier run (its config.json) is replaced
    only when `replace` says so; parts of one whose replacement was interrupted go anyway."""
    if not replace and (run_dir / CONFIG_FILE).exists():
        raise ValueError(f"{run_dir} already holds a run; continue it with resume=True, pass "
                         "overwrite=True to replace it, or choose another run_dir")
    if holds_run(run_dir):
        removed = clear_run(run_dir)
        what = "the previous run" if replace else "the parts of an unfinished run"
        log(f"removed {what} in {run_dir}: {', '.join(removed)}")
    run_dir.mkdir(parents=True, exist_ok=True)


def _progress_record(step: int, tokens: int, best: float, seconds: float,
                     train_seconds: float) -> dict[str, Any]:
    """What a checkpoint's train_state.json records about the run so far."""
    return {"step": step, "tokens": tokens, "best_val": best if math.isfinite(best) else None,
            "seconds": seconds, "train_seconds": train_seconds}


def _optimizer_kernels(optimizer: torch.optim.Optimizer) -> str:
    """ "adamw, fused kernels" etc., for the summary."""
    kind = "fused" if optimizer.defaults.get("fused") else (
        "foreach" if optimizer.defaults.get("foreach") else "for-loop")
    return f"{type(optimizer).__name__.lower()}, {kind} kernels"


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


def summary(model: B2lM, config: TrainConfig, device: torch.device, dtype: torch.dtype,
            T: int, accum: int, world: int, total_steps: int | None,
            decisions: dict[str, str] | None = None) -> str:
    """One screen: size, batch, memory estimate and the device/precision/compile decisions.

    `decisions` says what was chosen and why, e.g. {"dtype": "auto: this CPU multiplies bf16
    in hardware (AVX512-BF16)", "compile": "off (auto: off on cpu; ...)", "optimizer": "adam,
    fused kernels", "memory": "glibc malloc keeps freed memory ..."} (fit fills it from
    devices.dtype_decision, devices.compile_decision, the optimizer it built and, on a CPU,
    devices.keep_freed_memory).

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
    why = decisions or {}
    dtype_name = str(dtype).removeprefix("torch.")
    scaler = " with a gradient scaler" if dtype == torch.float16 else ""
    where = "torchrun local rank" if world > 1 else f"device={config.device!r}"
    dtype_why = why.get("dtype", f"dtype={config.dtype!r}")
    return "\n".join([
        f"model: {n:,} parameters ({model.num_parameters(exclude_embeddings=True):,} without "
        f"embeddings), {c.n_block} blocks x {c.n_embed} wide, context {c.n_context}",
        f"batch: {config.batch_size} x {T} tokens x {accum} accumulation x {world} "
        f"process(es) = {tokens_per_step:,} tokens/step; steps: {steps}{budget}",
        f"memory estimate: weights {n * 4 * mb:.1f} MB, gradients {n * 4 * mb:.1f} MB, "
        f"Adam {n * 8 * mb:.1f} MB, activations ~{act * mb:.0f} MB",
        f"device {device} ({where}); {dtype_name}{scaler} ({dtype_why}); "
        f"compile {why.get('compile', config.compile)}",
        f"optimizer {why.get('optimizer', config.optimizer)}, lr {config.lr:g} "
        f"({config.schedule}, warmup {config.warmup_steps})",
    ] + ([f"memory: {why['memory']}"] if "memory" in why else []))


class _StopFlag:
    """Ctrl-C / SIGTERM ask the loop to stop at the next step boundary (and save); a second
    Ctrl-C interrupts at once, except while a checkpoint is being written (`deferred`):
    then it only asks again, and the save finishes. Under torchrun the processes vote on it
    in each step's all-reduce, so all of them stop after the same step."""

    def __init__(self) -> None:
        self.raised = False
        self._deferring = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.raised and signum == signal.SIGINT and not self._deferring:
            raise KeyboardInterrupt
        self.raised = True

    @contextlib.contextmanager
    def deferred(self) -> Any:
        """Signals that arrive inside the block only ask to stop: the block is not cut short."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False

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


def _plot(run_dir: Path, log: Callable[[str], None]) -> None:
    try:
        from basegpt.plot import plot_runs
    except ImportError:
        return
    try:
        plot_runs([run_dir], run_dir / "loss.png")
    except ImportError as error:           # matplotlib missing: training goes on without plots
        log(f"note: no loss.png ({error})")
