"""The training loop: it learns, accumulation is exact, resume is bitwise, failures are clear."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from basegpt import B2lM, SlidingWindowDataset, Tokenizer
from basegpt.checkpoint import load_run
from basegpt.train import (TrainConfig, TrainingDiverged, evaluate, fit, learning_rate,
                           make_optimizer, token_bytes)
from basegpt.train_state import read_metrics

TEXT = ("First Citizen: Before we proceed any further, hear me speak. All: Speak, speak. "
        "First Citizen: You are all resolved rather to die than to famish? ") * 12


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer(vocab_size=320).train(TEXT, progress=False)


@pytest.fixture(scope="module")
def data(tokenizer):
    return SlidingWindowDataset(tokenizer=tokenizer, n_context=16, texts=[TEXT])


def tiny(tokenizer, **kw) -> B2lM:
    torch.manual_seed(0)
    base = dict(vocab_size=len(tokenizer), n_embed=32, n_block=2, n_head=2, n_k=16, n_v=16,
                n_ff=64, n_context=16)
    return B2lM(**{**base, **kw})


def test_seed_call_trains_and_keeps_pytorch_meaning(tokenizer, data):
    model = tiny(tokenizer)
    loader = DataLoader(data, batch_size=8, shuffle=True)
    result = model.train(loader, epochs=10)                  # the original design's call
    assert result.steps == 10 * len(loader), f"10 epochs of {len(loader)} batches: {result.steps}"
    first, last = result.train_loss[0][1], result.train_loss[-1][1]
    assert last < first - 0.8, f"the loss falls: {first:.3f} -> {last:.3f}"
    assert model.train() is model and model.training, "model.train() still switches mode"
    assert model.train(False) is model and not model.training, "model.train(False) too"


def test_tiny_model_overfits_one_batch(tokenizer, data):
    model = tiny(tokenizer, norm_position="pre")
    x, y = next(iter(DataLoader(data, batch_size=4)))
    one_batch = torch.utils.data.TensorDataset(x, y)
    result = fit(model, one_batch, config=TrainConfig(max_steps=300, batch_size=4, lr=3e-3),
                 progress=False)
    assert result.train_loss[-1][1] < 0.1, f"memorises 4 windows: {result.train_loss[-1]}"


def test_gradient_accumulation_matches_one_big_batch(tokenizer, data, monkeypatch):
    grads = []
    original_step = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        grads.append([p.grad.clone() for group in self.param_groups for p in group["params"]])
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    for batch_size in (8, 4):
        fit(tiny(tokenizer), data, config=TrainConfig(max_steps=1, batch_size=batch_size,
                                                      batch_tokens=8 * 16), progress=False)
    assert len(grads) == 2, "one step each"
    for big, accumulated in zip(*grads):
        torch.testing.assert_close(accumulated, big, rtol=1e-5, atol=1e-7)


def test_padding_never_counts(tokenizer):
    short = SlidingWindowDataset(tokenizer=tokenizer, n_context=16, texts=["All: Speak."])
    x, y = short[0]
    assert (y == -100).any(), "the only window is padded"
    model = tiny(tokenizer).eval()
    scores = evaluate(model, short, 4, torch.device("cpu"), torch.autocast.__enter__ and
                      (lambda: torch.no_grad()), 10_000)
    logits = model(x[None])[0]
    real = y != -100
    expected = torch.nn.functional.cross_entropy(logits[real], y[real]).item()
    assert math.isclose(scores["val_loss"], expected, rel_tol=1e-6), (scores, expected)
    assert scores["val_tokens"] == int(real.sum()), "only real targets counted"


def test_bits_per_byte_by_hand(tokenizer, data):
    model = tiny(tokenizer).eval()
    table = token_bytes(tokenizer, len(tokenizer))
    scores = evaluate(model, data, 8, torch.device("cpu"), lambda: torch.no_grad(), 10_000,
                      table)
    targets = torch.cat([data[i][1] for i in range(len(data))])
    n_bytes = sum(len(tokenizer.vocab[t]) for t in targets.tolist()
                  if t != -100 and t not in tokenizer.special_tokens.values())
    expected = scores["val_loss"] * scores["val_tokens"] / math.log(2) / n_bytes
    assert math.isclose(scores["val_bpb"], expected, rel_tol=1e-9), (scores, expected)
    assert math.isclose(scores["val_ppl"], math.exp(scores["val_loss"]), rel_tol=1e-9)


def test_learning_rate_schedule_values():
    cfg = TrainConfig(max_steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert learning_rate(cfg, 0, 0.0) == pytest.approx(0.1), "warmup starts at lr/warmup"
    assert learning_rate(cfg, 9, 0.0) == pytest.approx(1.0), "and reaches lr"
    assert learning_rate(cfg, 10, 0.0) == pytest.approx(1.0), "decay starts at the peak"
    assert learning_rate(cfg, 50, 0.5) == pytest.approx(0.55), "cosine midpoint"
    assert learning_rate(cfg, 100, 1.0) == pytest.approx(0.1), "ends at lr * min_lr_ratio"
    linear = TrainConfig(max_steps=100, lr=1.0, schedule="linear", min_lr_ratio=0.0)
    assert learning_rate(linear, 25, 0.25) == pytest.approx(0.75), "linear"
    constant = TrainConfig(max_steps=100, lr=0.3, schedule="constant")
    assert learning_rate(constant, 77, 0.77) == pytest.approx(0.3), "constant"


def test_adamw_decays_only_matrices(tokenizer):
    model = tiny(tokenizer, tie_weights=False)
    opt = make_optimizer(model, TrainConfig(max_steps=1, optimizer="adamw", weight_decay=0.1),
                         torch.device("cpu"))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"]), "decay: matrices only"
    assert model.tok_emb.weight in no_decay["params"], "the embedding is not decayed"
    assert all(p.dim() == 1 for p in no_decay["params"] if p is not model.tok_emb.weight), \
        "norm gains and biases are not decayed"
    with pytest.raises(ValueError, match="needs optimizer='adamw'"):
        TrainConfig(max_steps=1, weight_decay=0.1)


def _interrupt_at(step: int):
    def on_step(record):
        if record["step"] == step:
            os.kill(os.getpid(), signal.SIGINT)      # as if the user pressed Ctrl-C
    return on_step


def test_interrupted_and_resumed_run_is_bitwise_identical(tokenizer, data, tmp_path: Path):
    config = TrainConfig(max_steps=8, batch_size=4, lr=3e-3, warmup_steps=2, seed=3,
                         checkpoint_every=3, eval_every=4)
    straight = tiny(tokenizer, embed_dropout=0.1, resid_dropout=0.1)   # dropout uses the RNG
    fit(straight, data, data, config, run_dir=tmp_path / "a", progress=False)

    model = tiny(tokenizer, embed_dropout=0.1, resid_dropout=0.1)
    first = fit(model, data, data, config, run_dir=tmp_path / "b", progress=False,
                on_step=_interrupt_at(5))
    assert first.stopped_by == "signal" and first.steps == 5, (first.stopped_by, first.steps)
    resumed_model = tiny(tokenizer, embed_dropout=0.1, resid_dropout=0.1)
    torch.manual_seed(12345)                       # resume must not depend on the RNG it finds
    second = fit(resumed_model, data, data, config, run_dir=tmp_path / "b", resume=True,
                 progress=False)
    assert second.steps == 8 and second.stopped_by == "max_steps", second
    for (name, a), b in zip(straight.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs after resume"
    curve = [(r["step"], r["train_loss"]) for r in read_metrics(tmp_path / "a")]
    resumed_curve = [(r["step"], r["train_loss"]) for r in read_metrics(tmp_path / "b")]
    assert resumed_curve == curve, "the same loss at every step, data order included"
    run = load_run(tmp_path / "b")
    assert torch.equal(run.model.tok_emb.weight, straight.tok_emb.weight), "run dir = final"
    starts = json.loads((tmp_path / "b" / "run.json").read_text())
    assert [s["resumed"] for s in starts] == [False, True], "run.json records the resume"
    with pytest.raises(ValueError, match="different model config"):
        fit(tiny(tokenizer, n_embed=48), data, data, config, run_dir=tmp_path / "b",
            resume=True, progress=False)


def test_run_directory_contents(tokenizer, data, tmp_path: Path):
    config = TrainConfig(max_steps=6, batch_size=4, checkpoint_every=2, keep_checkpoints=2,
                         eval_every=3)
    fit(tiny(tokenizer), data, data, config, run_dir=tmp_path / "run", progress=False)
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "train_state.safetensors",
            "train_state.json", "metrics.jsonl", "checkpoints", "best", "run.json",
            "loss.png"} <= names, names
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info[0]["torch"] == torch.__version__ and info[0]["resumed"] is False, info
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert kept == ["step_00000004", "step_00000006"], f"latest 2 kept: {kept}"
    best = json.loads((tmp_path / "run" / "best" / "best.json").read_text())
    evals = [r for r in read_metrics(tmp_path / "run") if "val_loss" in r]
    assert best["val_loss"] == min(r["val_loss"] for r in evals), "best/ is the best eval"
    assert not any(p.suffix in (".pt", ".pkl", ".bin") for p in (tmp_path / "run").rglob("*")), \
        "no pickle files"


def test_nonfinite_loss_stops_with_a_clear_message(tokenizer, data):
    model = tiny(tokenizer)
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")
    with pytest.raises(TrainingDiverged, match=r"non-finite loss at step 0.*lr .*on_nonfinite"):
        fit(model, data, config=TrainConfig(max_steps=3, batch_size=4), progress=False)
    result = fit(model, data, config=TrainConfig(max_steps=3, batch_size=4, on_nonfinite="skip"),
                 progress=False)
    assert result.skipped_steps == 3, "every step skipped, the run goes on"


def test_stops_on_time_budget(tokenizer, data):
    result = fit(tiny(tokenizer), data, config=TrainConfig(max_minutes=1e-6, batch_size=4),
                 progress=False)
    assert result.stopped_by == "max_minutes" and result.steps == 1, result


def test_bad_configs_are_clear(tokenizer, data):
    with pytest.raises(ValueError, match="set max_steps, epochs or max_minutes"):
        fit(tiny(tokenizer), data, progress=False)
    with pytest.raises(ValueError, match="did you mean 'max_steps'"):
        fit(tiny(tokenizer), data, max_step=3, progress=False)
    with pytest.raises(ValueError, match="not a multiple"):
        fit(tiny(tokenizer), data, max_steps=1, batch_size=4, batch_tokens=100, progress=False)
    with pytest.raises(ValueError, match="n_context >= 16"):
        fit(tiny(tokenizer, n_context=8), data, max_steps=1, progress=False)
    with pytest.raises(ValueError, match="lr must be positive"):
        TrainConfig(lr=0)


def test_compile_failure_falls_back_to_eager_with_one_warning(tokenizer, data, monkeypatch):
    class Broken(torch.nn.Module):               # what a failing backend looks like: the
        def forward(self, *args, **kwargs):      # compile error surfaces at the first call
            raise RuntimeError("backend exploded")
    monkeypatch.setattr(torch, "compile", lambda model, **kw: Broken())
    messages = []
    result = fit(tiny(tokenizer), data, config=TrainConfig(max_steps=3, batch_size=4,
                                                           compile="on"),
                 progress=False, log=messages.append)
    assert result.steps == 3, "training went on eagerly"
    warnings = [m for m in messages if "torch.compile failed" in m]
    assert len(warnings) == 1 and "backend exploded" in warnings[0], messages


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_mixed_precision_on_cpu_tracks_fp32(tokenizer, data, dtype):
    losses = {}
    for name in ("float32", dtype):
        result = fit(tiny(tokenizer), data, config=TrainConfig(max_steps=5, batch_size=4,
                                                               dtype=name), progress=False)
        losses[name] = [loss for _, loss in result.train_loss]
    assert all(math.isfinite(x) for x in losses[dtype]), f"{dtype} losses finite"
    assert losses[dtype] == pytest.approx(losses["float32"], rel=0.02), \
        f"{dtype} autocast stays within 2% of fp32: {losses}"
