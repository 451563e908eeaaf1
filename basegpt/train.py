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

The loop, in `_fit`, reads as the algorithm; each line is one method of `Trainer`:

    while not trainer.done():
        record = trainer.step()          # batch -> forward/backward -> clip -> optimizer step
        if trainer.validation_due():
            trainer.validate(record)     # validation loss, perplexity, bits per byte
        trainer.save(record)             # metrics.jsonl, best/, a checkpoint when due

Around that core: the optimizer and learning-rate schedule (optim.py), evaluation
(evaluation.py), mixed precision (bf16 autocast, fp16 with a gradient scaler), torch.compile,
Ctrl-C/SIGTERM saves and stops, the run directory and exact resume (rundir.py,
train_state.py), a new run from another run's weights (init_from, for fine-tuning),
DDP or FSDP under torchrun (distributed.py, sharding.py), the summary printed before the first
step (train_summary.py). `model.train(loader, epochs=10)`
(basegpt.B2lM, api.py) lands here too.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from basegpt.checkpoint import init_from_run, model_tensors, save_config, unwrap
from basegpt.config import TrainConfig
from basegpt.data import IGNORE_INDEX
from basegpt.data.memmap import check_shard_data
from basegpt.data.streams import BatchStream, LoaderStream, make_stream
from basegpt.devices import autocast as make_autocast
from basegpt.devices import (compile_decision, dtype_decision, peak_flops,
                             pick_device)
from basegpt.fast import malloc_setting, training_kernels
from basegpt.evaluation import evaluate, target_bytes, token_bytes, window_len
from basegpt.model import B2lM
from basegpt.optim import (decay_progress, learning_rate, make_optimizer, optimizer_kernels,
                           planned_steps, stop_reason)
from basegpt.progress import progress_bar
from basegpt.rundir import (begin_checkpoint, checkpoint_tmp, checkpoint_to_resume,
                            last_checkpoint, save_best, save_checkpoint, start_afresh,
                            tidy as tidy_run_dir)
from basegpt.runlock import RunLock, run_lock
from basegpt.sharding import choose, gather, is_dtensor, is_sharded, shard
from basegpt.tokenizer import Tokenizer
from basegpt.train_summary import summary, summary_activations
from basegpt.optimizer_state import save_optimizer_rows
from basegpt.train_state import (METRICS_FILE, append_metrics, process_rng_state,
                                 record_run_info, resume as resume_from, truncate_metrics,
                                 update_train_config)

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
    if config.parallel == "fsdp" and not dist.enabled:
        distributed.join_alone(pick_device(config.device))   # FSDP over one process (offload)
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
    trainer = Trainer(model, train_data, val_data, config, dist, tokenizer, run_dir, log)
    trainer.open_run(resume=resume, overwrite=overwrite, lock=lock, init_from=init_from,
                     extra_config=extra_config)
    trainer.prepare()
    with trainer.running(progress):
        while not trainer.done():
            record = trainer.step()        # batch -> forward/backward -> clip -> optimizer step
            if record is None:
                continue                   # a non-finite step, skipped (on_nonfinite="skip")
            if trainer.validation_due():
                trainer.validate(record)   # validation loss, perplexity, bits per byte
            trainer.save(record)           # metrics.jsonl, best/, a checkpoint when due
            if on_step is not None:
                on_step(record)
        trainer.finish()                   # save the last step if no checkpoint holds it
    model.eval()
    return trainer.result


class Trainer:
    """One training run in progress: the model and its data, the optimizer, the clock, and
    what has happened so far (`result`). `fit` drives it; each method is one named part of
    the loop, and the loop itself (`_fit`) reads as the algorithm."""

    def __init__(self, model: B2lM, train_data: Dataset | DataLoader, val_data: Dataset | None,
                 config: TrainConfig, dist: Dist, tokenizer: Tokenizer | None,
                 run_dir: str | os.PathLike | None, log: Callable[[str], None]) -> None:
        self.config, self.log, self.model = config, log, model
        self.device = pick_device(config.device) if not dist.enabled else dist.device
        self.dtype, self.dtype_why = dtype_decision(config.dtype, self.device)
        self.raw = unwrap(model)             # the B2lM itself, no wrappers; on the device below
        self.tokenizer = tokenizer or getattr(train_data, "tokenizer", None) or getattr(
            getattr(train_data, "dataset", None), "tokenizer", None)
        for data in (train_data, val_data):     # prepared shards: made by this tokenizer?
            check_shard_data(data, self.tokenizer, self.raw.config.vocab_size)
        self.val_data = val_data
        self.stream = make_stream(train_data, config.batch_size, config.seed, dist.rank, dist.world)
        self.T = window_len(self.stream.dataset if isinstance(self.stream, BatchStream)
                             else self.stream.loader.dataset)
        if self.T > self.raw.config.n_context:
            raise ValueError(f"the data's windows hold {self.T} tokens but the model's n_context "
                             f"is {self.raw.config.n_context}; build the model with n_context >= "
                             f"{self.T}")
        self.batch_size = (self.stream.loader.batch_size if isinstance(self.stream, LoaderStream)
                           else config.batch_size)
        self.accum = _grad_accum(config, self.batch_size * self.T, dist.world)
        self.tokens_per_step = self.accum * self.batch_size * self.T * dist.world
        self.dist = self._spread(dist)
        # Offloaded (FSDP) rows and their optimizer state live in CPU memory.
        self.optimizer = make_optimizer(self.raw, config, torch.device("cpu") if config.offload
                                        else self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.result = TrainResult(run_dir=self.run_dir)
        self.steps, self.best, self.saved_at = 0, math.inf, -1
        self.clock = _Clock()

    def _spread(self, dist: Dist) -> Dist:
        """Choose how the processes share the model (sharding.choose: DDP, FSDP or neither)
        and put it on the device: under FSDP sharded first, before the optimizer is built on
        its rows. Returns `dist` with the choice."""
        raw, config = self.raw, self.config
        activations = summary_activations(raw, self.batch_size, self.T, self.dtype,
                                          config.activation_checkpointing)
        parallel, self.parallel_why = choose(config.parallel, raw, dist, self.device, activations)
        if parallel == "fsdp" and not is_sharded(raw):
            if self.dtype == torch.float16:
                raise ValueError("parallel='fsdp' trains in bfloat16 or float32, not float16 "
                                 "(its gradient scaler would need every process's overflow "
                                 "check); pass dtype='bfloat16' (--dtype bfloat16) or 'float32'")
            # Sharded from where it is: fully_shard moves one unit at a time to the device and
            # keeps its rows there, so the whole model never has to fit on it.
            shard(raw, self.device, self.dtype, config.offload)
        elif not is_sharded(raw):
            raw.to(self.device)
        return dataclasses.replace(dist, parallel=parallel)

    def weights(self) -> dict[str, torch.Tensor]:
        """The model's weights, whole, by plain name, in process 0 ({} in the others, which
        under FSDP must call this too: their rows are gathered)."""
        return gather(model_tensors(self.raw), keep=self.dist.is_main)

    # ------------------------------------------------------------------------ before the loop

    def open_run(self, *, resume: bool, overwrite: bool, lock: RunLock | None,
                 init_from: str | os.PathLike | None, extra_config: dict[str, Any] | None) -> None:
        """Start from another run's weights (init_from), or continue this run from its newest
        checkpoint (resume), or write the run directory afresh; then note this session in
        run.json."""
        run_dir, dist = self.run_dir, self.dist
        source = init_from_run(self.raw, init_from, self.tokenizer) if init_from is not None else None
        if source is not None:
            extra_config = {**(extra_config or {}), "init_from": source}
            self.log(f"starting from the weights of {init_from}")
        if resume and run_dir is None:
            raise ValueError("resume=True needs run_dir (the run to continue)")
        if lock is not None:
            tidy_run_dir(run_dir, lock, self.log)
        folder = checkpoint_to_resume(run_dir, self.raw, self.tokenizer, self.log) if resume else None
        if folder is not None:
            self._resume(folder, extra_config)
        elif run_dir is not None and dist.is_main:
            if self.tokenizer is None:
                raise ValueError("a run directory needs the tokenizer beside the model: pass "
                                 "tokenizer=... (or train on a dataset that has one)")
            # resume without a checkpoint starts the run again from step 0.
            start_afresh(run_dir, replace=overwrite or resume, log=self.log)
            self.tokenizer.save(run_dir / "tokenizer.json")
            save_config(run_dir, self.raw.config, self.tokenizer, self.config.to_dict(), extra_config)
            (run_dir / METRICS_FILE).unlink(missing_ok=True)
        if run_dir is not None and dist.is_main:
            record_run_info(run_dir, self.device, self.dtype, dist.world, resumed=folder is not None,
                            init_from=source["path"] if source else None)

    def _resume(self, folder: Path, extra_config: dict[str, Any] | None) -> None:
        """Load checkpoint `folder`: weights, optimizer, scaler, RNGs, data position, clock."""
        run_dir, log = self.run_dir, self.log
        saved = resume_from(folder, self.raw, self.optimizer, self.scaler, self.stream,
                            self.dist.rank, self.device)
        self.steps = self.saved_at = saved["step"]
        self.best, self.result.tokens = saved["best_val"], saved["tokens"]
        self.clock = _Clock(before=saved["seconds"], train_seconds=saved.get("train_seconds", 0.0))
        if self.dist.is_main:                # the settings in force now, for the next resume
            update_train_config(run_dir, self.config.to_dict(), extra_config)
            dropped = truncate_metrics(run_dir, self.steps)
            if dropped:
                log(f"metrics.jsonl: dropped {dropped} records logged after the checkpoint "
                    f"of step {self.steps}; those steps are trained again")
        log(f"resumed {run_dir} at step {self.steps} from {folder.relative_to(run_dir)}")
        if isinstance(self.stream, LoaderStream) and not self.stream.restorable:
            log("warning: this DataLoader draws its order from its own generator=, which a "
                "resume cannot rewind, so the batches from here on differ from an "
                "uninterrupted run's; for an exact resume drop generator= (fit seeds the "
                "shuffle itself) or pass the Dataset instead of a DataLoader")

    def prepare(self) -> None:
        """Compile where asked (or where it pays), plan the steps, and log the summary."""
        config, raw, device = self.config, self.raw, self.device
        compile_on, compile_why = compile_decision(config.compile, device)
        self.compiled = torch.compile(raw) if compile_on else None
        self.train_model = self.dist.wrap(self.compiled if self.compiled is not None else raw)
        self.autocast = make_autocast(device, self.dtype)
        self.total_steps = planned_steps(config, max(self.stream.batches_per_epoch // self.accum, 1))
        self.bytes_per_token = token_bytes(self.tokenizer, raw.config.vocab_size)
        self.peak = peak_flops(device, self.dtype, config.peak_tflops)      # one device's
        self.flops_per_token = raw.flops_per_token(self.T)  # attention costs by the windows' T
        self.first_step = self.steps
        kept = malloc_setting() if device.type == "cpu" else None    # if the caller asked
        memory = {"memory": kept} if kept is not None else {}
        self.log(summary(raw, dataclasses.replace(config, batch_size=self.batch_size), device,
                         self.dtype, self.T, self.accum, self.dist.world, self.total_steps,
                         decisions={"dtype": self.dtype_why,
                                    "compile": f"{'on' if compile_on else 'off'} ({compile_why})",
                                    "optimizer": optimizer_kernels(self.optimizer),
                                    "parallel": f"{self.dist.parallel} ({self.parallel_why})",
                                    **memory}))

    @contextlib.contextmanager
    def running(self, progress: bool) -> Iterator[None]:
        """The loop's surroundings: training mode, the progress bar, the clock, attention
        kernels for training (basegpt.fast), and Ctrl-C / SIGTERM asking to stop (handled until
        the block ends, final save included)."""
        self.stop = _StopFlag()
        self.stop.install()
        self.model.train()
        self.bar = _progress_bar(self.config, self.total_steps, self.steps, self.clock.before,
                                 show=progress and self.dist.is_main)
        self.speed = _Speed()
        self.clock.begin()
        # Steps and epochs come out the same in every process; the clock and Ctrl-C do not,
        # so those are voted on inside each step's loss all-reduce (step). A process that
        # stopped on its own would leave the others waiting forever in their next collective.
        self.reason = stop_reason(self.config, self.steps, self.total_steps, self.clock.elapsed)
        recompute = self.raw.activation_checkpointing
        self.raw.activation_checkpointing = self.config.activation_checkpointing
        try:
            with training_kernels(self.raw):     # basegpt.fast: the same numbers, faster
                yield
        finally:
            self.raw.activation_checkpointing = recompute
            self.bar.close()
            self.stop.uninstall()

    # ------------------------------------------------------------------------ the loop

    def done(self) -> bool:
        """Whether the run stops before another step: a budget is used up, or a signal came
        (with one process at once; under torchrun as voted in the last step)."""
        if self.stop.raised and not self.dist.enabled:
            self.reason = self.reason or "signal"
        return bool(self.reason)

    def step(self) -> dict[str, Any] | None:
        """One optimizer step over a global batch; returns its metrics record, or None when
        a non-finite step was skipped (on_nonfinite="skip")."""
        config, dist = self.config, self.dist
        self.clock.step_begins()
        done = decay_progress(config, self.steps, self.total_steps, self.clock.elapsed)
        lr = learning_rate(config, self.steps, done)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batches = [next(self.stream) for _ in range(self.accum)]
        n_real = dist.sum(sum(int((y != IGNORE_INDEX).sum()) for _, y in batches))
        loss_sum = self._forward_backward(batches, n_real)
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else None
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.raw.parameters(),
                                                   config.grad_clip or float("inf"))
        # Under FSDP the norm is a DTensor made from every process's rows.
        grad_norm = (grad_norm.full_tensor() if is_dtensor(grad_norm) else grad_norm).item()
        loss_total, clock_total, signals, n_bytes = dist.sum_all(
            [loss_sum.item(), self.clock.now(), self.stop.raised, self._target_bytes(batches)])
        loss = loss_total / max(n_real, 1)
        bpb = loss_total / math.log(2) / n_bytes if n_bytes else None   # as evaluate's
        self.clock.elapsed = clock_total / dist.world      # the mean of the processes' clocks
        updated = self._update(loss, grad_norm, scale, lr)
        self.optimizer.zero_grad(set_to_none=True)
        self.steps += 1
        self.reason = ("signal" if signals else "") or stop_reason(
            config, self.steps, self.total_steps, self.clock.elapsed)
        if not updated:
            self.result.skipped_steps += 1
            return None
        self.result.tokens += self.tokens_per_step
        self.result.train_loss.append((self.steps, loss))
        return self._record(loss, bpb, lr, grad_norm, scale, self.clock.step_ends())

    def _target_bytes(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
        """Bytes of text that the batches' real targets stand for (special tokens count 0,
        as in evaluation.evaluate): the step's bits per byte divide by it. 0 without a
        tokenizer, which alone knows them."""
        if self.bytes_per_token is None:
            return 0.0
        return sum(target_bytes(self.bytes_per_token, y) for _, y in batches)

    def _forward_backward(self, batches: list[tuple[torch.Tensor, torch.Tensor]],
                          n_real: int) -> torch.Tensor:
        """_forward_backward on the training model; torch.compile fails lazily, in the first
        forward or the first compiled backward, so a failure there falls back to eager
        (which always works), dropping the gradients of the failed try."""
        try:
            return _forward_backward(self.train_model, batches, n_real, self.device,
                                     self.autocast, self.scaler, self.dist)
        except Exception as error:
            if self.compiled is None or self.steps > self.first_step:
                raise
            self.log(f"warning: torch.compile failed ({type(error).__name__}: "
                     f"{str(error).splitlines()[0] if str(error) else ''}); training eagerly")
            self.optimizer.zero_grad(set_to_none=True)
            self.compiled, self.train_model = None, self.dist.wrap(self.raw)
            return _forward_backward(self.train_model, batches, n_real, self.device,
                                     self.autocast, self.scaler, self.dist)

    def _update(self, loss: float, grad_norm: float, scale: float | None, lr: float) -> bool:
        """Take the optimizer step unless the step diverged; False when it was skipped.

        With fp16 an inf gradient is usually the scaler's own overflow: scaler.step() then
        skips the update and update() halves the scale. Only a non-finite loss, or overflow
        at a scale below MIN_LOSS_SCALE, is divergence: on_nonfinite="stop" raises
        TrainingDiverged, "skip" drops the step.
        """
        scaler = self.scaler
        bad = not math.isfinite(loss) or (not math.isfinite(grad_norm) and scale is None)
        if not bad:
            scaler.step(self.optimizer)
            scaler.update()
            overflow = scale is not None and scaler.get_scale() < scale
            if overflow:
                self.result.overflow_steps += 1
            bad = overflow and scaler.get_scale() < MIN_LOSS_SCALE
        if not bad:
            return True
        if self.config.on_nonfinite == "stop":
            what = "loss" if not math.isfinite(loss) else "gradient"
            floor = (f" even at loss scale {scaler.get_scale():g} (the fp16 gradient scaler "
                     f"fell below {MIN_LOSS_SCALE:g})" if what == "gradient" and scale is not None
                     else "")
            raise TrainingDiverged(
                f"non-finite {what} at step {self.steps}{floor}: loss {loss}, grad norm "
                f"{grad_norm}, lr {lr:.3g}; last good checkpoint: "
                f"{last_checkpoint(self.run_dir)}. Lower lr, raise warmup_steps or grad_clip, "
                "or pass on_nonfinite='skip'")
        if not math.isfinite(loss):         # (the scaler's overflow path has updated)
            scaler.update()
        return False

    def _record(self, loss: float, bpb: float | None, lr: float, grad_norm: float,
                scale: float | None, seconds: float) -> dict[str, Any]:
        """The step's metrics record (what metrics.jsonl gets: this step's own speed), and
        the bar's numbers (the speed over the last steps, which a single slow step does not
        swing)."""
        tok_s = self.tokens_per_step / max(seconds, 1e-9)           # this step, no evals
        record = {"step": self.steps, "tokens": self.result.tokens,
                  "epoch": round(self.stream.epoch, 4), "train_loss": loss,
                  **({"train_bpb": bpb} if bpb is not None else {}), "lr": lr,
                  "grad_norm": grad_norm if math.isfinite(grad_norm) else None,
                  "tokens_per_s": tok_s, "seconds": self.clock.now(),
                  "train_seconds": self.clock.train_seconds}
        if scale is not None:
            record["loss_scale"] = self.scaler.get_scale()
        smooth = self.speed.add(self.tokens_per_step, seconds)
        by_clock = self.total_steps is None
        postfix = {"step": str(self.steps)} if by_clock else {}   # the bar counts seconds
        postfix.update(loss=f"{loss:.3f}", lr=f"{lr:.2e}")
        postfix["tok/s"] = f"{smooth:,.0f}"
        if self.peak:
            # tok_s counts every process's tokens; MFU is per device, against one's peak.
            per_device_peak = self.peak * self.dist.world
            record["mfu"] = self.flops_per_token * tok_s / per_device_peak
            postfix["mfu"] = f"{self.flops_per_token * smooth / per_device_peak:.1%}"
        self.bar.set_postfix(postfix, refresh=False)    # drawn by the update, when due
        self.bar.update(min(record["seconds"], self.bar.total) - self.bar.n if by_clock else 1)
        return record

    def validation_due(self) -> bool:
        """Every eval_every steps, and after the last one."""
        every = self.config.eval_every
        return self.val_data is not None and (bool(every and self.steps % every == 0)
                                              or bool(self.reason))

    def validate(self, record: dict[str, Any]) -> None:
        """Score the fixed validation windows; the scores join the step's record."""
        scores = evaluate(self.raw, self.val_data, self.config.batch_size, self.device,
                          self.autocast, self.config.eval_tokens, self.bytes_per_token)
        record.update(scores)
        self.result.evals.append({"step": self.steps, "tokens": self.result.tokens, **scores})
        self.log(f"step {self.steps}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()
                                                    if k != "val_tokens"))

    def save(self, record: dict[str, Any]) -> None:
        """The record into metrics.jsonl; a checkpoint every checkpoint_every steps and at
        the end, else best/ when validation improved; loss.png redrawn after a validation."""
        run_dir, main = self.run_dir, self.dist.is_main
        if main and run_dir is not None:
            append_metrics(run_dir, record)
        is_best = "val_loss" in record and record["val_loss"] < self.best
        if is_best:
            self.best = record["val_loss"]
        every = self.config.checkpoint_every
        # Every process reaches the same decision here (step and reason agree).
        if run_dir is not None and (self.reason or (every and self.steps % every == 0)):
            self.checkpoint(record["seconds"], is_best)
        elif run_dir is not None and is_best:
            weights = self.weights()                # every process: FSDP gathers the rows
            if main:
                save_best(run_dir, weights, self.steps, self.best)
        if "val_loss" in record and run_dir is not None and main:
            _plot(run_dir, self.log)                # after metrics.jsonl has this validation

    def checkpoint(self, seconds: float, is_best: bool) -> None:
        """Save the run at this step. Every process takes part (its RNG state goes into the
        checkpoint; under FSDP its rows of the weights are gathered and it writes its rows of
        the optimizer's state); process 0 writes the rest and commits. Ctrl-C and SIGTERM
        wait until it is on disk."""
        dist, run_dir = self.dist, self.run_dir
        rng_ranks = dist.gather(process_rng_state(self.device))
        weights = self.weights()
        sharded = dist.parallel == "fsdp"
        with self.stop.deferred():
            if sharded:                        # each process's rows into the one folder
                if dist.is_main:
                    begin_checkpoint(run_dir, self.steps)
                dist.barrier()
                save_optimizer_rows(checkpoint_tmp(run_dir, self.steps), self.optimizer,
                                    self.steps)
                dist.barrier()
            if dist.is_main:
                progress = _progress_record(self.steps, self.result.tokens, self.best, seconds,
                                            self.clock.train_seconds)
                save_checkpoint(run_dir, weights, self.optimizer, self.scaler, self.stream,
                                self.config.keep_checkpoints, progress, is_best,
                                rng_ranks=rng_ranks, begun=sharded)
            # Committed before any process goes on: one that went on to read the run (a
            # resume in the same job, a sample from the weights) would find it half-written.
            dist.barrier()
        self.saved_at = self.steps

    def finish(self) -> None:
        """Note how the run ended; save the last step if no checkpoint holds it (the run
        ended on a skipped step, or by Ctrl-C between steps)."""
        result = self.result
        result.stopped_by, result.steps, result.epochs = self.reason, self.steps, self.stream.epoch
        result.seconds = self.clock.now()
        if self.run_dir is None:
            return
        if self.saved_at != self.steps:
            self.checkpoint(result.seconds, is_best=False)
        if result.stopped_by == "signal":
            self.log(f"interrupted at step {self.steps}; saved. Continue with: basegpt train "
                     f"--resume {self.run_dir}")


class _Clock:
    """The run's one clock. now(): this process's run time, earlier sessions included (a
    resume carries it on). elapsed: the run time all processes agree on (under torchrun the
    mean of their clocks, voted at each step), which the time budget and the schedule read.
    train_seconds: time inside training steps only, without validations and saves."""

    def __init__(self, before: float = 0.0, train_seconds: float = 0.0) -> None:
        self.before, self.elapsed, self.train_seconds = before, before, train_seconds
        self.begin()

    def begin(self) -> None:
        """Start counting this session's time (just before the first step)."""
        self._start = self._step_start = time.perf_counter()

    def now(self) -> float:
        return self.before + time.perf_counter() - self._start

    def step_begins(self) -> None:
        self._step_start = time.perf_counter()

    def step_ends(self) -> float:
        """The step's own seconds, added to train_seconds."""
        took = time.perf_counter() - self._step_start
        self.train_seconds += took
        return took


def _progress_bar(config: TrainConfig, total_steps: int | None, start_step: int,
                  seconds_before: float, show: bool) -> tqdm:
    """The bar counts steps; with only a time budget it counts seconds, so its ETA is the
    budget's end. At a terminal it is drawn in place; elsewhere it is a line every
    progress.LOG_EVERY seconds (progress.py)."""
    by_clock = total_steps is None
    total = config.max_minutes * 60 if by_clock else total_steps
    # A resume past its budget trains nothing; capped, the bar shows it full (tqdm warns
    # "clamping frac" for a start beyond its total).
    return progress_bar(total, "train", "s" if by_clock else "step", show=show,
                        initial=min(seconds_before if by_clock else start_step, total),
                        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f}{unit} "
                        "[{elapsed}<{remaining}{postfix}]" if by_clock else None)


class _Speed:
    """Tokens per second over the last `window` steps: the tokens they trained over the
    seconds they took (not a mean of per-step rates, which a few fast steps would inflate)."""

    def __init__(self, window: int = 20) -> None:
        self.steps: collections.deque[tuple[int, float]] = collections.deque(maxlen=window)

    def add(self, tokens: int, seconds: float) -> float:
        """Count one more step; returns the speed over the window."""
        self.steps.append((tokens, seconds))
        return sum(t for t, _ in self.steps) / max(sum(s for _, s in self.steps), 1e-9)


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


def _progress_record(step: int, tokens: int, best: float, seconds: float,
                     train_seconds: float) -> dict[str, Any]:
    """What a checkpoint's train_state.json records about the run so far."""
    return {"step": step, "tokens": tokens, "best_val": best if math.isfinite(best) else None,
            "seconds": seconds, "train_seconds": train_seconds}


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
