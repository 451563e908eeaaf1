"""The training loop: it learns, accumulation is exact, resume is bitwise, failures are clear."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch
from helpers import TEXT, tiny
from torch.utils.data import DataLoader

from basegpt import B2lM, SlidingWindowDataset, Tokenizer
from basegpt.checkpoint import load_run
from basegpt.evaluation import evaluate, token_bytes
from basegpt.optim import decay_progress, fused_adam_available, learning_rate, make_optimizer
from basegpt.train import TrainConfig, TrainingDiverged, fit
from basegpt.recipe import saved_progress
from basegpt.train_state import read_metrics

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
    for batch_size in (8, 4):        # fp32: in bf16 the two batch shapes round differently
        fit(tiny(tokenizer), data, config=TrainConfig(max_steps=1, batch_size=batch_size,
                                                      batch_tokens=8 * 16, dtype="float32"),
            progress=False)
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


def test_each_steps_bits_per_byte_are_its_loss_over_the_bytes_of_its_targets(tokenizer, data):
    """One step over every window: train_bpb = the summed loss in bits / the bytes of text
    its targets stand for (special tokens 0, as in evaluation), the numbers `basegpt plot`
    draws by default."""
    records = []
    fit(tiny(tokenizer), data, config=TrainConfig(max_steps=1, batch_size=len(data),
                                                  dtype="float32"),
        tokenizer=tokenizer, progress=False, on_step=records.append)
    targets = [t for i in range(len(data)) for t in data[i][1].tolist() if t != -100]
    n_bytes = sum(len(tokenizer.vocab[t]) for t in targets
                  if t not in tokenizer.special_tokens.values())
    assert n_bytes > len(targets), "merged tokens: more than a byte each"
    expected = records[0]["train_loss"] * len(targets) / math.log(2) / n_bytes
    assert math.isclose(records[0]["train_bpb"], expected, rel_tol=1e-6), (records[0], expected)


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


def test_a_raised_time_budget_replans_the_decay():
    """README: resuming a 4-minute run with --max-minutes 8 continues halfway down the cosine."""
    ended = TrainConfig(max_minutes=4, lr=1.0, warmup_steps=0, min_lr_ratio=0.0)
    raised = TrainConfig(max_minutes=8, lr=1.0, warmup_steps=0, min_lr_ratio=0.0)
    at_end = learning_rate(ended, 500, decay_progress(ended, 500, None, 240.0))
    resumed = learning_rate(raised, 500, decay_progress(raised, 500, None, 240.0))
    assert at_end == pytest.approx(0.0) and resumed == pytest.approx(0.5), (at_end, resumed)


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


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_fused_optimizer_matches_foreach_on_cpu(tokenizer, optimizer, monkeypatch):
    """make_optimizer picks fused kernels on CPU (torch >= 2.4), and they make the same
    updates as foreach: the same gradients, step after step, give the same weights. (Fed
    by a real loss instead, rounding differences feed back through the gradients and the
    runs drift apart, ~1e-5 after 5 steps at lr 1e-2, as any change of summation order does.)"""
    import basegpt.optim
    if not fused_adam_available(torch.device("cpu")):
        pytest.skip(f"torch {torch.__version__} has no fused Adam on CPU (torch >= 2.4 has)")
    config = TrainConfig(max_steps=5, optimizer=optimizer, lr=1e-2,
                         weight_decay=0.1 if optimizer == "adamw" else 0.0)
    torch.manual_seed(0)
    shapes = [p.shape for p in tiny(tokenizer).parameters()]
    grads = [[torch.randn(shape) for shape in shapes] for _ in range(5)]
    weights = {}
    for kind in ("fused", "foreach"):
        if kind == "foreach":                  # what make_optimizer builds without fused kernels
            monkeypatch.setattr(basegpt.optim, "fused_adam_available", lambda device: False)
        torch.manual_seed(0)
        model = tiny(tokenizer)
        opt = make_optimizer(model, config, torch.device("cpu"))
        # Each group carries its own flags, and step() follows the group's, not the defaults.
        other = "foreach" if kind == "fused" else "fused"
        assert all(g[kind] and not g[other] for g in opt.param_groups), \
            f"{kind} kernels not in use: {[(g['fused'], g['foreach']) for g in opt.param_groups]}"
        for step_grads in grads:
            for param, grad in zip(model.parameters(), step_grads):
                param.grad = torch.empty_like(param).copy_(grad)   # in the param's layout
            opt.step()
        weights[kind] = [p.detach().clone() for p in model.parameters()]
    moved = max((a - b).abs().max().item() for a, b in zip(weights["fused"], weights["foreach"]))
    assert moved < 1e-6, f"fused and foreach Adam differ by {moved} after 5 steps"
    torch.manual_seed(0)
    start = [p.detach().clone() for p in tiny(tokenizer).parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(start, weights["fused"])), "nothing trained"


@pytest.mark.parametrize("kernels", ["fused", "foreach"])
def test_saved_optimizer_state_resumes_the_same_updates(kernels):
    """The moments come back from safetensors contiguous; a parameter stored (in, out) (as
    B2lM keeps its matrices) must get them in its own layout, or fused Adam, which pairs
    parameter and moment elements by memory position, applies them to the wrong weights."""
    from basegpt.optimizer_state import optimizer_from_flat, optimizer_to_flat
    if kernels == "fused" and not fused_adam_available(torch.device("cpu")):
        pytest.skip(f"torch {torch.__version__} has no fused Adam on CPU")
    torch.manual_seed(0)
    start = torch.randn(6, 4)
    grads = [torch.randn(6, 4) for _ in range(2)]

    def stepped(param, opt, grad):
        param.grad = grad.t().contiguous().t()             # autograd gives the param's layout
        opt.step()

    kept = torch.nn.Parameter(start.t().contiguous().t())   # (6, 4) stored (4, 6)
    opt = torch.optim.Adam([kept], lr=0.1, **{kernels: True})
    stepped(kept, opt, grads[0])
    tensors, meta = optimizer_to_flat(opt)
    saved = {k: v.contiguous().clone() for k, v in tensors.items()}   # as safetensors returns them
    resumed = torch.nn.Parameter(kept.detach().t().contiguous().t())
    opt2 = torch.optim.Adam([resumed], lr=0.1, **{kernels: True})
    optimizer_from_flat(opt2, saved, json.loads(json.dumps(meta)))
    assert opt2.state[resumed]["exp_avg"].stride() == resumed.stride()
    stepped(kept, opt, grads[1])
    stepped(resumed, opt2, grads[1])
    assert torch.equal(kept, resumed), "the resumed optimizer made a different update"


def _interrupt_at(step: int, signum: int = signal.SIGINT):
    """An on_step that signals this process after `step`: SIGINT as if the user pressed
    Ctrl-C, SIGTERM as a job scheduler sends it."""
    def on_step(record):
        if record["step"] == step:
            os.kill(os.getpid(), signum)
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


def test_a_crash_after_a_checkpoint_resumes_without_duplicate_metrics(tokenizer, data,
                                                                     tmp_path: Path):
    config = TrainConfig(max_steps=8, batch_size=4, seed=3, checkpoint_every=3, eval_every=4)
    fit(tiny(tokenizer), data, data, config, run_dir=tmp_path / "a", progress=False)

    def crash_at_5(record):
        if record["step"] == 5:
            raise RuntimeError("simulated crash")     # steps 4 and 5 logged, not checkpointed
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(tiny(tokenizer), data, data, config, run_dir=tmp_path / "b", progress=False,
            on_step=crash_at_5)
    with open(tmp_path / "b" / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 6, "train_lo')               # and a line the crash cut short
    assert [r["step"] for r in read_metrics(tmp_path / "b")] == [1, 2, 3, 4, 5]

    messages = []
    fit(tiny(tokenizer), data, data, config, run_dir=tmp_path / "b", resume=True,
        progress=False, log=messages.append)
    assert any("dropped 2 records" in m for m in messages), messages

    def curve(run):
        return [(r["step"], r["train_loss"], r.get("val_loss")) for r in read_metrics(run)]
    assert curve(tmp_path / "b") == curve(tmp_path / "a"), \
        "each step once, with the uninterrupted run's losses"
    lines = (tmp_path / "b" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 8, "the cut line is gone from the file, not just skipped"


def test_run_directory_contents(tokenizer, data, tmp_path: Path):
    config = TrainConfig(max_steps=6, batch_size=4, checkpoint_every=2, keep_checkpoints=2,
                         eval_every=3)
    fit(tiny(tokenizer), data, data, config, run_dir=tmp_path / "run", progress=False)
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert names == {"config.json", "model.safetensors", "tokenizer.json", "metrics.jsonl",
                     "checkpoints", "best", "run.json", "loss.png"}, \
        f"{names}: the training state lives in checkpoints/, and the lock is gone after fit"
    newest = tmp_path / "run" / "checkpoints" / "step_00000006"
    assert {p.name for p in newest.iterdir()} == {"model.safetensors", "train_state.safetensors",
                                                  "train_state.json"}
    assert (newest / "model.safetensors").read_bytes() == \
        (tmp_path / "run" / "model.safetensors").read_bytes(), "the top holds the newest weights"
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info[0]["torch"] == torch.__version__ and info[0]["resumed"] is False, info
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert kept == ["step_00000004", "step_00000006"], f"latest 2 kept: {kept}"
    best = json.loads((tmp_path / "run" / "best" / "best.json").read_text())
    evals = [r for r in read_metrics(tmp_path / "run") if "val_loss" in r]
    assert best["val_loss"] == min(r["val_loss"] for r in evals), "best/ is the best eval"
    assert not any(p.suffix in (".pt", ".pkl", ".bin") for p in (tmp_path / "run").rglob("*")), \
        "no pickle files"


@pytest.fixture(scope="module")
def shards(tokenizer, tmp_path_factory) -> Path:
    """TEXT prepared into shards with the 320-token tokenizer (and its tokenizer.json)."""
    from basegpt.data import prepare
    folder = tmp_path_factory.mktemp("shards")
    (folder / "a.txt").write_text(TEXT)
    (folder / "b.txt").write_text(TEXT[::-1])
    prepare([folder / "a.txt", folder / "b.txt"], tokenizer, folder / "out", workers=1,
            val_fraction=0.5, progress=False)
    return folder / "out"


def test_fit_checks_shards_against_the_model_and_tokenizer(tokenizer, shards):
    from basegpt.data import ShardDataset
    config = TrainConfig(max_steps=1, batch_size=4)
    train, val = ShardDataset(shards, 16), ShardDataset(shards, 16, "val")
    with pytest.raises(ValueError, match=f"the shards in {shards} hold ids of a 320-token "
                                         "vocabulary but the model's vocab_size is 258; build "
                                         "the model with vocab_size=320"):
        fit(tiny(tokenizer, vocab_size=258), train, val, config, progress=False)
    other = Tokenizer(vocab_size=320)
    with pytest.raises(ValueError, match=f"tokenized by tokenizer {tokenizer.hash[:12]}, but "
                                         f"the given tokenizer is {other.hash[:12]}; train with "
                                         "the tokenizer.json saved beside the shards"):
        fit(tiny(tokenizer), train, val, config, tokenizer=other, progress=False)
    with pytest.raises(ValueError, match="vocab_size is 258"):            # inside a DataLoader
        fit(tiny(tokenizer, vocab_size=258), DataLoader(train, batch_size=4), config=config,
            progress=False)


def test_fit_on_shards_takes_their_tokenizer(tokenizer, shards, tmp_path: Path):
    from basegpt.data import ShardDataset
    fit(tiny(tokenizer), ShardDataset(shards, 16), ShardDataset(shards, 16, "val"),
        TrainConfig(max_steps=2, batch_size=4), run_dir=tmp_path / "run", progress=False)
    assert load_run(tmp_path / "run").tokenizer.hash == tokenizer.hash, \
        "the run saved the tokenizer.json found beside the shards"


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


# ------------------------------------------------------------------------ precision, devices

def _scaler_starting_at(monkeypatch, init_scale: float) -> None:
    """fit builds torch.amp.GradScaler(device, enabled=...); make it start at init_scale."""
    real = torch.amp.GradScaler
    monkeypatch.setattr(torch.amp, "GradScaler",
                        lambda *args, **kwargs: real(*args, **{**kwargs, "init_scale": init_scale}))


def test_fp16_scaler_overflow_skips_the_update_not_the_run(tokenizer, data, monkeypatch):
    # 2**20 overflows fp16 on this model's first backward (2**16, the default, does not):
    # the GradScaler's routine search for its level, which must not read as divergence.
    _scaler_starting_at(monkeypatch, 2.0 ** 20)
    model = tiny(tokenizer)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    after = {}
    records = []

    def on_step(record):
        records.append(record)
        after[record["step"]] = {k: v.clone() for k, v in model.state_dict().items()}

    result = fit(model, data, config=TrainConfig(max_steps=4, batch_size=4, dtype="float16"),
                 progress=False, on_step=on_step)
    assert result.stopped_by == "max_steps" and result.steps == 4, result
    assert result.overflow_steps == 1 and result.skipped_steps == 0, result
    assert records[0]["loss_scale"] == 2.0 ** 19 and records[0]["grad_norm"] is None, records[0]
    assert all(r["loss_scale"] == 2.0 ** 19 and r["grad_norm"] > 0 for r in records[1:]), records
    for name, tensor in start.items():
        assert torch.equal(after[1][name], tensor), f"{name}: the overflowed update was skipped"
    assert not torch.equal(after[4]["tok_emb.weight"], start["tok_emb.weight"]), "then it trains"


def _nan_gradients(model: B2lM) -> None:
    """Make every backward give a NaN gradient for one weight while the loss stays finite."""
    model.blocks[0].ff.down.weight.register_hook(lambda grad: grad * float("nan"))


def test_fp16_scale_collapse_is_divergence(tokenizer, data, monkeypatch):
    _scaler_starting_at(monkeypatch, 4.0)       # overflow halves it: 2, 1, then 0.5 < 1
    model = tiny(tokenizer)
    _nan_gradients(model)
    with pytest.raises(TrainingDiverged, match=r"non-finite gradient at step 2 even at loss "
                                               r"scale 0\.5 .*grad norm nan, lr "):
        fit(model, data, config=TrainConfig(max_steps=5, batch_size=4, dtype="float16"),
            progress=False)


def _fake_cuda(monkeypatch, capability: tuple[int, int], name: str = "NVIDIA Test GPU") -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)


@pytest.mark.parametrize("capability, expected", [((7, 0), torch.float16),     # V100
                                                  ((7, 5), torch.float16),     # T4
                                                  ((8, 0), torch.bfloat16),    # A100
                                                  ((9, 0), torch.bfloat16)])   # H100
def test_auto_dtype_follows_the_gpus_compute_capability(monkeypatch, capability, expected):
    from basegpt.devices import pick_dtype
    _fake_cuda(monkeypatch, capability)
    # On 7.x torch.cuda.is_bf16_supported() says True (emulated bf16, far slower): not asked.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert pick_dtype("auto", torch.device("cuda")) == expected, capability
    assert pick_dtype("auto", torch.device("mps")) == torch.float32, "MPS: fp32"
    assert pick_dtype("bfloat16", torch.device("cuda")) == torch.bfloat16, "an explicit dtype wins"


@pytest.mark.parametrize("capability, expected, why", [
    ({"avx512_bf16": True, "amx_bf16": False}, torch.bfloat16,
     "auto: this CPU multiplies bf16 in hardware (AVX512-BF16)"),
    ({"avx512_bf16": True, "amx_bf16": True}, torch.bfloat16,
     "auto: this CPU multiplies bf16 in hardware (AMX-BF16)"),
    ({"avx512_bf16": False, "amx_bf16": False, "avx2": True}, torch.float32,
     "auto: fp32 on a CPU without bf16 instructions"),
    ({}, torch.float32, "auto: fp32 on a CPU without bf16 instructions"),
    (None, torch.float32, "auto: fp32 on a CPU without bf16 instructions"),   # torch cannot say
])
def test_auto_dtype_on_a_cpu_follows_its_bf16_instructions(request, monkeypatch, capability,
                                                           expected, why):
    from basegpt.devices import cpu_bf16_instructions, dtype_decision, pick_dtype
    cpu_bf16_instructions.cache_clear()                  # it asks torch once per process
    request.addfinalizer(cpu_bf16_instructions.cache_clear)
    if capability is None:
        monkeypatch.delattr(torch._C._cpu, "_get_cpu_capability")
    else:
        monkeypatch.setattr(torch._C._cpu, "_get_cpu_capability", lambda: capability)
    assert dtype_decision("auto", torch.device("cpu")) == (expected, why)
    assert pick_dtype("float32", torch.device("cpu")) == torch.float32, "an explicit dtype wins"


@pytest.mark.parametrize("name, bf16, fp16", [
    ("NVIDIA H100 80GB HBM3", 989.0, 989.0),          # SXM
    ("NVIDIA H100 PCIe", 756.0, 756.0),
    ("NVIDIA H100 NVL", None, None),                  # figures differ between data sheets
    ("NVIDIA H200", 989.0, 989.0),
    ("NVIDIA GH200 480GB", None, None),               # not the H200
    ("NVIDIA A100-SXM4-80GB", 312.0, 312.0),
    ("NVIDIA A100 80GB PCIe", 312.0, 312.0),
    ("NVIDIA L40S", 362.05, 362.05),
    ("NVIDIA L40", 181.05, 181.05),                   # not the L4
    ("NVIDIA L4", 121.0, 121.0),
    ("NVIDIA A10", 125.0, 125.0),
    ("NVIDIA A10G", None, None),                      # not the A10; no NVIDIA data sheet
    ("Tesla V100-SXM2-16GB", None, 125.0),
    ("Tesla V100-PCIE-32GB", None, 112.0),
    ("Tesla V100S-PCIE-32GB", None, 130.0),
    ("Tesla T4", None, 65.0),
    ("NVIDIA GeForce RTX 4090", None, None),          # unknown: no MFU
])
def test_peak_flops_table_matches_whole_gpu_names(monkeypatch, name, bf16, fp16):
    from basegpt.devices import peak_flops
    _fake_cuda(monkeypatch, (9, 0), name)
    cuda = torch.device("cuda")
    for dtype, tflops in ((torch.bfloat16, bf16), (torch.float16, fp16)):
        expected = None if tflops is None else tflops * 1e12
        assert peak_flops(cuda, dtype, None) == expected, (name, dtype)
    assert peak_flops(cuda, torch.bfloat16, 50.0) == 50e12, "peak_tflops overrides the table"
    assert peak_flops(torch.device("cpu"), torch.float32, None) is None, "no table for CPUs"


def test_mfu_is_per_device_at_the_datas_window_length(tokenizer, data):
    model = tiny(tokenizer, n_context=64)                     # windows are T = 16 < 64
    records = []
    fit(model, data, config=TrainConfig(max_steps=2, batch_size=4, peak_tflops=1.0),
        progress=False, on_step=records.append)
    T, world, peak = data[0][0].numel(), 1, 1.0e12
    assert model.flops_per_token(T) != model.flops_per_token(), "the test must tell T apart"
    for r in records:
        expected = model.flops_per_token(T) * r["tokens_per_s"] / (peak * world)
        assert math.isclose(r["mfu"], expected, rel_tol=1e-12), (r["mfu"], expected)
    records.clear()
    fit(model, data, config=TrainConfig(max_steps=1, batch_size=4), progress=False,
        on_step=records.append)
    assert "mfu" not in records[0], "no known peak (a CPU), no MFU"


def test_summary_states_sizes_and_decisions(tokenizer, data, monkeypatch):
    from basegpt.devices import dtype_decision
    model = tiny(tokenizer)
    dtype, why = dtype_decision("auto", torch.device("cpu"))    # bf16 or fp32: this CPU's
    messages = []
    fit(model, data, config=TrainConfig(max_steps=1, batch_size=4, batch_tokens=8 * 16),
        progress=False, log=messages.append)
    text = "\n".join(messages)
    n = model.num_parameters()
    mb = 2 ** 20
    for phrase in (f"{n:,} parameters", "4 x 16 tokens x 2 accumulation x 1 process(es) = "
                   "128 tokens/step", f"weights {n * 4 / mb:.1f} MB", f"Adam {n * 8 / mb:.1f} MB",
                   "device cpu (device='auto')", f"{str(dtype).removeprefix('torch.')} ({why})",
                   "compile off (auto: off on cpu", "optimizer adam, fused kernels"):
        assert phrase in text, f"{phrase!r} not in the summary:\n{text}"

    class Eager(torch.nn.Module):                # stands in for a compiled model
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)
    monkeypatch.setattr(torch, "compile", lambda m, **kw: Eager(m))
    messages.clear()
    fit(tiny(tokenizer), data, config=TrainConfig(max_steps=1, batch_size=4, compile="on",
                                                  dtype="bfloat16", optimizer="adamw"),
        progress=False, log=messages.append)
    text = "\n".join(messages)
    for phrase in ("bfloat16 (dtype='bfloat16')", "compile on (compile='on')",
                   "optimizer adamw, fused kernels"):
        assert phrase in text, f"{phrase!r} not in the summary:\n{text}"


def test_summary_names_fused_kernels_and_capability_on_a_gpu(tokenizer, monkeypatch):
    from basegpt.devices import dtype_decision
    from basegpt.train_summary import summary
    _fake_cuda(monkeypatch, (7, 0))
    assert dtype_decision("auto", torch.device("cuda"))[1] == \
        "auto: compute capability 7.0 lacks bf16 tensor cores"
    text = summary(tiny(tokenizer), TrainConfig(max_steps=1, batch_size=4), torch.device("cuda"),
                   torch.float16, 16, 1, 1, 1, decisions={"optimizer": "adam, fused kernels"})
    assert "float16 with a gradient scaler" in text and "adam, fused kernels" in text, text


# ------------------------------------------------------------------------ failures and stops

def test_compile_failure_in_the_first_backward_falls_back_too(tokenizer, data, monkeypatch):
    class FailsBackward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            raise RuntimeError("compiled backward exploded")

    class Broken(torch.nn.Module):               # forward works, its backward does not
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return FailsBackward.apply(self.inner(x))
    monkeypatch.setattr(torch, "compile", lambda model, **kw: Broken(model))
    messages = []
    model = tiny(tokenizer)
    result = fit(model, data, config=TrainConfig(max_steps=3, batch_size=4, compile="on"),
                 progress=False, log=messages.append)
    warnings = [m for m in messages if "torch.compile failed" in m]
    assert len(warnings) == 1 and "compiled backward exploded" in warnings[0], messages
    eager = tiny(tokenizer)
    fit(eager, data, config=TrainConfig(max_steps=3, batch_size=4, compile="off"), progress=False)
    assert result.steps == 3, result
    for (name, a), b in zip(eager.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), f"{name}: the retried step is the eager step exactly"


def test_nonfinite_messages_name_grad_norm_and_last_checkpoint(tokenizer, data, tmp_path: Path):
    model = tiny(tokenizer)

    def poison_after_step_2(record):
        if record["step"] == 2:
            with torch.no_grad():
                model.lm_head.weight[0, 0] = float("nan")
    config = TrainConfig(max_steps=5, batch_size=4, checkpoint_every=1, schedule="constant")
    with pytest.raises(TrainingDiverged) as caught:
        fit(model, data, config=config, run_dir=tmp_path / "run", progress=False,
            on_step=poison_after_step_2)
    message = str(caught.value)
    for phrase in ("non-finite loss at step 2", "grad norm nan", "lr 0.001",
                   f"last good checkpoint: {tmp_path / 'run' / 'checkpoints' / 'step_00000002'}"):
        assert phrase in message, f"{phrase!r} not in: {message}"

    model = tiny(tokenizer)
    _nan_gradients(model)                          # the loss stays finite; a gradient does not
    with pytest.raises(TrainingDiverged, match=r"non-finite gradient at step 0: loss \d.*"
                                               r"grad norm nan, lr 0\.001; last good "
                                               r"checkpoint: none \(no run_dir\)"):
        fit(model, data, config=TrainConfig(max_steps=3, batch_size=4), progress=False)
    result = fit(model, data, config=TrainConfig(max_steps=3, batch_size=4,
                                                 on_nonfinite="skip"), progress=False)
    assert result.skipped_steps == 3 and result.steps == 3, result


def test_sigterm_saves_and_stops_like_ctrl_c(tokenizer, data, tmp_path: Path):
    before = signal.getsignal(signal.SIGTERM)
    config = TrainConfig(max_steps=8, batch_size=4, seed=3, checkpoint_every=3)
    straight = tiny(tokenizer)
    fit(straight, data, config=config, progress=False)
    result = fit(tiny(tokenizer), data, config=config, run_dir=tmp_path / "a", progress=False,
                 on_step=_interrupt_at(5, signal.SIGTERM))
    assert result.stopped_by == "signal" and result.steps == 5, result
    assert saved_progress(tmp_path / "a")["step"] == 5, "the step SIGTERM ended on is saved"
    assert signal.getsignal(signal.SIGTERM) is before, "fit puts the old SIGTERM handler back"
    resumed = tiny(tokenizer)
    fit(resumed, data, config=config, run_dir=tmp_path / "a", resume=True, progress=False)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs after a SIGTERM and resume"


def test_a_signal_saves_its_step_once(tokenizer, data, tmp_path: Path, monkeypatch):
    import basegpt.train
    saved = []
    real = basegpt.train.save_checkpoint

    def recording(run_dir, model, optimizer, scaler, stream, keep, progress, is_best, **kw):
        saved.append(progress["step"])
        return real(run_dir, model, optimizer, scaler, stream, keep, progress, is_best, **kw)
    monkeypatch.setattr(basegpt.train, "save_checkpoint", recording)
    config = TrainConfig(max_steps=8, batch_size=4, checkpoint_every=3)
    result = fit(tiny(tokenizer), data, config=config, run_dir=tmp_path / "a", progress=False,
                 on_step=_interrupt_at(5))
    assert result.stopped_by == "signal" and result.steps == 5, result
    assert saved == [3, 5], f"every 3 steps, then the interrupted step once: {saved}"

    saved.clear()                          # now the signal lands inside step 6's forward
    model = tiny(tokenizer)
    calls = []

    def interrupt_in_sixth_forward(module, inputs):
        calls.append(1)
        if len(calls) == 6:
            os.kill(os.getpid(), signal.SIGINT)
    model.register_forward_pre_hook(interrupt_in_sixth_forward)
    result = fit(model, data, config=config, run_dir=tmp_path / "b", progress=False)
    assert result.stopped_by == "signal" and result.steps == 6, result
    assert saved == [3, 6], f"step 6 finishes, then is saved once: {saved}"


# ------------------------------------------------------------------------ resume

def _shuffled_loader(data):
    return DataLoader(data, batch_size=4, shuffle=True)


def test_resume_with_a_shuffling_dataloader_is_exact(tokenizer, data, tmp_path: Path):
    # 13 batches per epoch: stopped at step 17 (epoch 2, batch 4), resumed to step 30.
    config = TrainConfig(max_steps=30, batch_size=4, seed=3, checkpoint_every=6)
    assert len(_shuffled_loader(data)) < 17, "the stop must fall in the second epoch"
    straight = tiny(tokenizer, embed_dropout=0.1)
    fit(straight, _shuffled_loader(data), None, config, tokenizer=tokenizer,
        run_dir=tmp_path / "a", progress=False)
    first = fit(tiny(tokenizer, embed_dropout=0.1), _shuffled_loader(data), None, config,
                tokenizer=tokenizer, run_dir=tmp_path / "b", progress=False,
                on_step=_interrupt_at(17))
    assert first.steps == 17, first
    resumed = tiny(tokenizer, embed_dropout=0.1)
    torch.manual_seed(999)                         # the loader's order must not depend on it
    messages = []
    fit(resumed, _shuffled_loader(data), None, config, tokenizer=tokenizer,
        run_dir=tmp_path / "b", resume=True, progress=False, log=messages.append)
    assert not [m for m in messages if "warning" in m], messages
    curve = [r["train_loss"] for r in read_metrics(tmp_path / "a")]
    assert [r["train_loss"] for r in read_metrics(tmp_path / "b")] == curve, \
        "the same batches in the same order after resume"
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs after resume"


def test_resume_warns_about_a_dataloader_with_its_own_generator(tokenizer, data, tmp_path):
    def loader():
        return DataLoader(data, batch_size=4, shuffle=True,
                          generator=torch.Generator().manual_seed(0))
    config = TrainConfig(max_steps=2, batch_size=4)
    fit(tiny(tokenizer), loader(), None, config, tokenizer=tokenizer, run_dir=tmp_path / "r",
        progress=False)
    messages = []
    fit(tiny(tokenizer), loader(), None, TrainConfig(max_steps=3, batch_size=4),
        tokenizer=tokenizer, run_dir=tmp_path / "r", resume=True, progress=False,
        log=messages.append)
    warnings = [m for m in messages if m.startswith("warning")]
    assert len(warnings) == 1 and "generator=" in warnings[0], messages


def test_resume_refuses_another_tokenizer(tokenizer, data, tmp_path: Path):
    config = TrainConfig(max_steps=2, batch_size=4)
    fit(tiny(tokenizer), data, None, config, run_dir=tmp_path / "r", progress=False)
    other = Tokenizer(vocab_size=320).train(TEXT[::-1], progress=False)
    assert other.hash != tokenizer.hash and len(other) == len(tokenizer)
    with pytest.raises(ValueError, match=f"trained with another tokenizer \\(hash "
                                         f"{tokenizer.hash[:12]}, given {other.hash[:12]}\\)"):
        fit(tiny(tokenizer), data, None, config, tokenizer=other, run_dir=tmp_path / "r",
            resume=True, progress=False)


def test_resume_records_the_changed_training_settings(tokenizer, data, tmp_path: Path):
    fit(tiny(tokenizer), data, None, TrainConfig(max_steps=2, batch_size=4),
        run_dir=tmp_path / "r", progress=False)
    fit(tiny(tokenizer), data, None, TrainConfig(max_steps=4, batch_size=4, lr=5e-4),
        run_dir=tmp_path / "r", resume=True, progress=False, extra_config={"note": "second"})
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["train"]["max_steps"] == 4 and saved["train"]["lr"] == 5e-4, saved["train"]
    assert saved["note"] == "second" and saved["model"] == tiny(tokenizer).config.to_dict(), saved


@pytest.mark.parametrize("budget", [{"max_steps": 1}, {"max_minutes": 1e-6}])
def test_a_resume_past_its_budget_trains_nothing_and_the_bar_does_not_warn(
        tokenizer, data, tmp_path: Path, budget):
    import warnings
    config = TrainConfig(max_steps=2, batch_size=4)
    fit(tiny(tokenizer), data, None, config, run_dir=tmp_path / "r", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # tqdm's "clamping frac" included
        result = fit(tiny(tokenizer), data, None, TrainConfig(batch_size=4, **budget),
                     run_dir=tmp_path / "r", resume=True, progress=True)
    assert result.steps == 2 and result.stopped_by == next(iter(budget)), result


def test_best_is_a_loadable_run(tokenizer, data, tmp_path: Path):
    model = tiny(tokenizer)
    weights = {}

    def keep(record):
        weights[record["step"]] = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(max_steps=6, batch_size=4, lr=3e-2, eval_every=2, checkpoint_every=4)
    fit(model, data, data, config, run_dir=tmp_path / "run", progress=False, on_step=keep)
    best_step = json.loads((tmp_path / "run" / "best" / "best.json").read_text())["step"]
    best = load_run(tmp_path / "run" / "best")
    for name, tensor in best.model.state_dict().items():
        assert torch.equal(tensor, weights[best_step][name]), f"{name}: best/ is step {best_step}"
    assert best.tokenizer.hash == tokenizer.hash, "with the run's tokenizer beside it"


def test_init_from_starts_a_new_run_from_another_runs_weights(tokenizer, data, tmp_path: Path,
                                                              step0_weights):
    from basegpt.checkpoint import model_tensors
    fit(tiny(tokenizer), data, None, TrainConfig(max_steps=3, batch_size=4, lr=1e-2),
        run_dir=tmp_path / "src", progress=False)
    source = model_tensors(load_run(tmp_path / "src").model)
    at_step_0 = step0_weights
    at_step_0.clear()                           # the source's own first step filled it
    torch.manual_seed(1)                        # not the source's initial weights either
    model = B2lM(tiny(tokenizer).config.replace(resid_dropout=0.1, attention="manual"))
    result = fit(model, data, None, TrainConfig(max_steps=2, batch_size=4),
                 run_dir=tmp_path / "new", init_from=tmp_path / "src", progress=False)
    for name, tensor in source.items():
        assert torch.equal(at_step_0[name], tensor), f"{name}: step 0 is the source's weights"
    assert result.steps == 2 and [r["step"] for r in read_metrics(tmp_path / "new")] == [1, 2], \
        "a new run, counted from step 0, not a continuation of the source's 3 steps"
    saved = json.loads((tmp_path / "new" / "config.json").read_text())
    assert saved["init_from"]["path"] == str((tmp_path / "src").resolve()), saved
    run_info = json.loads((tmp_path / "new" / "run.json").read_text())
    assert run_info[0]["init_from"] == str((tmp_path / "src").resolve()), run_info
    from basegpt.insight import run_info as info_of
    assert info_of(tmp_path / "new")["init_from"] == saved["init_from"], "`info` names the source"
    assert info_of(tmp_path / "src")["init_from"] is None

    config = TrainConfig(max_steps=1, batch_size=4)
    with pytest.raises(ValueError, match=r"n_ff=128 \(the source has 64\)"):
        fit(tiny(tokenizer, n_ff=128), data, None, config, init_from=tmp_path / "src",
            progress=False)
    with pytest.raises(ValueError, match=r"blocks\[1\]\.n_head=1 \(the source has 2\)"):
        fit(tiny(tokenizer, blocks=[{"attention": "manual"}, {"n_head": 1}]), data, None, config,
            init_from=tmp_path / "src", progress=False)
    other = Tokenizer(vocab_size=320).train(TEXT[::-1], progress=False)
    with pytest.raises(ValueError, match=f"tokenizer \\(hash {other.hash[:12]}\\) is not"):
        fit(tiny(tokenizer), data, None, config, tokenizer=other, init_from=tmp_path / "src",
            progress=False)
    with pytest.raises(ValueError, match="pass one of them"):
        fit(tiny(tokenizer), data, None, config, run_dir=tmp_path / "new", resume=True,
            init_from=tmp_path / "src", progress=False)


def test_settings_order_is_preset_then_config_file_then_flags(tmp_path: Path):
    from basegpt.recipe import load_preset, resolve_spec
    preset = load_preset("seed")
    (tmp_path / "c.json").write_text(json.dumps({"train": {"lr": 0.002, "max_steps": 7},
                                                 "model": {"n_block": 3}}))
    (tmp_path / "c.toml").write_text("[train]\nlr = 0.002\nmax_steps = 7\n[model]\nn_block = 3\n")
    for name in ("c.json", "c.toml"):
        spec = resolve_spec("seed", tmp_path / name, {"train": {"lr": 0.005}})
        assert spec["train"]["lr"] == 0.005, f"{name}: a flag beats the file"
        assert spec["train"]["max_steps"] == 7 and spec["model"]["n_block"] == 3, \
            f"{name}: the file beats the preset"
        assert spec["model"]["n_embed"] == preset["model"]["n_embed"], \
            f"{name}: the preset fills in the rest"


# ------------------------------------------------------------------------ on a GPU

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["auto", "float16"])
def test_gpu_mixed_precision_trains_and_reports_mfu(tokenizer, data, dtype):
    from basegpt.devices import gpu_peak_tflops, pick_dtype
    records = []
    model = tiny(tokenizer)
    result = fit(model, data, config=TrainConfig(max_steps=20, batch_size=8, lr=3e-3,
                                                 device="cuda", dtype=dtype, compile="off"),
                 progress=False, on_step=records.append)
    losses = [loss for _, loss in result.train_loss]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0], losses
    major = torch.cuda.get_device_capability()[0]
    expected = torch.float16 if dtype == "float16" or major < 8 else torch.bfloat16
    assert pick_dtype(dtype, torch.device("cuda")) == expected
    assert (expected == torch.float16) == ("loss_scale" in records[-1]), records[-1]
    figures = gpu_peak_tflops(torch.cuda.get_device_name())
    if figures and str(expected).removeprefix("torch.") in figures:
        assert 0 < records[-1]["mfu"] < 1, records[-1]
    else:
        assert "mfu" not in records[-1], f"unknown GPU {torch.cuda.get_device_name()}: no MFU"


@pytest.mark.gpu
def test_gpu_compile_trains_like_eager(tokenizer, data):
    losses = {}
    for setting in ("off", "on"):
        messages = []
        result = fit(tiny(tokenizer), data, config=TrainConfig(
            max_steps=5, batch_size=8, device="cuda", dtype="float32", compile=setting),
            progress=False, log=messages.append)
        assert not [m for m in messages if "torch.compile failed" in m], messages
        assert f"compile {setting}" in "\n".join(messages), messages
        losses[setting] = [loss for _, loss in result.train_loss]
    assert losses["on"] == pytest.approx(losses["off"], rel=1e-3), losses


def test_fit_leaves_the_process_malloc_alone(tokenizer, data, monkeypatch):
    """A library call changes no process-wide setting: glibc's malloc thresholds are the
    command line's to set (basegpt train asks on a CPU), not fit's."""
    import basegpt.fast.memory
    calls = []
    monkeypatch.setattr(basegpt.fast.memory, "set_malloc_thresholds",
                        lambda libc, environ: calls.append(libc) or "set")
    fit(tiny(tokenizer), data, config=TrainConfig(max_steps=1, batch_size=4, device="cpu"),
        progress=False)
    assert calls == [], "fit tuned malloc"


def test_the_summary_states_the_malloc_setting_where_the_caller_asked(tokenizer, data,
                                                                     monkeypatch):
    import basegpt.train
    monkeypatch.setattr(basegpt.train, "malloc_setting", lambda: "glibc malloc kept (asked)")
    messages: list[str] = []
    fit(tiny(tokenizer), data, config=TrainConfig(max_steps=1, batch_size=4, device="cpu"),
        progress=False, log=messages.append)
    assert "memory: glibc malloc kept (asked)" in "\n".join(messages), messages
