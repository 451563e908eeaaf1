"""FSDP (sharding.py): the same training as DDP and as one process, checkpoints of per-process
safetensors rows that resume at another process count, and the choice between the two."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from basegpt import B2lM, SlidingWindowDataset, Tokenizer
from basegpt.checkpoint import load_run, load_tensors
from basegpt.config import TrainConfig
from basegpt.distributed import Dist
from basegpt.sharding import choose, rows
from basegpt.train import fit
from basegpt.train_state import read_metrics
from test_distributed import _free_port

TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good "
        "fortune, must be in want of a wife. ") * 20
MODEL = dict(n_embed=32, n_block=2, n_head=2, n_k=16, n_v=16, n_ff=64, n_context=16,
             norm_position="pre", norm="rmsnorm", positional="rope", activation="swiglu",
             bias=False, tie_weights=True)
"""The main job's kind of block (a Llama), tiny: its tied head puts one tensor in two places."""
GLOBAL_ROWS = 8          # sequences per optimizer step, whatever the process count

# Every fit of the job: global batch 8 x 16 tokens as 2 processes x 2 rows x 2 micro-batches.
JOB = r'''
import json, os, shutil, sys, torch
torch.set_num_threads(1)
from basegpt import B2lM, SlidingWindowDataset, Tokenizer
from basegpt import distributed
from basegpt.train import TrainConfig, fit
from test_sharding import MODEL, TEXT, tiny_run

out = {}
def run(name, **kw):
    losses = []
    tiny_run(losses, world=2, **kw)
    out[name] = losses

run("ddp", parallel="ddp")
run("fsdp", parallel="fsdp")
run("fsdp_recompute", parallel="fsdp", activation_checkpointing=True)
run("fsdp_offload", parallel="fsdp", offload=True)
run("fsdp_whole_batches", parallel="fsdp", micro_batches=1)
run("ddp_bf16", parallel="ddp", dtype="bfloat16")
run("fsdp_bf16", parallel="fsdp", dtype="bfloat16")
# A run saved at step 3, copied for the one-process resume, then resumed here to step 6.
root = sys.argv[1]
run("fsdp_first", parallel="fsdp", run_dir=os.path.join(root, "two"), max_steps=3)
dist = distributed.setup()
if dist.is_main:
    shutil.copytree(os.path.join(root, "two"), os.path.join(root, "one"))
    shutil.copytree(os.path.join(root, "two"), os.path.join(root, "ddp"))
dist.barrier()
run("fsdp_resumed", parallel="fsdp", run_dir=os.path.join(root, "two"), resume=True)
if dist.is_main:
    json.dump(out, open(os.path.join(root, "losses.json"), "w"))
'''


def tiny_run(losses: list[float], world: int = 1, max_steps: int = 6, micro_batches: int = 2,
             **kw) -> B2lM:
    """Train the tiny model 6 steps (global batch 8 rows of 16 tokens, `micro_batches` per
    process, a constant lr so that a run cut at step 3 plans the same), appending each
    step's loss; returns the model."""
    tokenizer = Tokenizer(vocab_size=300).train(TEXT, progress=False)
    data = SlidingWindowDataset(tokenizer=tokenizer, n_context=16, texts=[TEXT])
    torch.manual_seed(0)
    model = B2lM(vocab_size=len(tokenizer), **MODEL)
    settings = {"dtype": "float32", **{k: v for k, v in kw.items()
                                       if k not in ("run_dir", "resume")}}
    config = TrainConfig(max_steps=max_steps, batch_size=GLOBAL_ROWS // world // micro_batches,
                         batch_tokens=GLOBAL_ROWS * 16, lr=3e-3, schedule="constant",
                         checkpoint_every=3, **settings)
    fit(model, data, config=config, progress=False, run_dir=kw.get("run_dir"),
        resume=kw.get("resume", False), on_step=lambda r: losses.append(r["train_loss"]))
    return model


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> tuple[Path, dict[str, list[float]]]:
    """One torchrun job of 2 processes (gloo, CPU) making every FSDP run the tests read."""
    root = tmp_path_factory.mktemp("fsdp")
    script = root / "job.py"
    script.write_text(JOB)
    tests = str(Path(__file__).parent)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                    f"--master_port={_free_port()}", str(script), str(root)],
                   check=True, timeout=300, env=env)
    return root, json.loads((root / "losses.json").read_text())


@pytest.fixture(scope="module")
def one_process() -> list[float]:
    losses: list[float] = []
    tiny_run(losses)
    return losses


@pytest.mark.slow
@pytest.mark.parametrize("run", ["ddp", "fsdp", "fsdp_recompute", "fsdp_offload",
                                 "fsdp_whole_batches"])
def test_ddp_and_fsdp_follow_one_process(job, one_process, run: str):
    _, losses = job
    assert len(losses[run]) == 6
    for step, (mine, ddp, single) in enumerate(zip(losses[run], losses["ddp"], one_process)):
        assert mine == pytest.approx(ddp, rel=1e-5), f"step {step + 1}: {run} vs ddp"
        assert mine == pytest.approx(single, rel=1e-5), f"step {step + 1}: {run} vs 1 process"
    assert losses[run][-1] < losses[run][0] - 0.3, "it learns"


@pytest.mark.slow
def test_fsdp_in_mixed_precision_follows_ddp_in_autocast(job):
    # bf16 weights gathered for the compute (FSDP's mixed precision), fp32 rows and reduction,
    # against DDP's fp32 weights under bf16 autocast: the same products in bf16.
    _, losses = job
    for step, (fsdp, ddp) in enumerate(zip(losses["fsdp_bf16"], losses["ddp_bf16"]), start=1):
        assert fsdp == pytest.approx(ddp, abs=0.02), f"step {step}"
    assert losses["fsdp_bf16"] != losses["fsdp"], "the products ran in bf16"
    assert losses["fsdp_bf16"][-1] < losses["fsdp_bf16"][0] - 0.3, "it learns"


@pytest.mark.slow
def test_an_fsdp_checkpoint_is_rows_per_process_in_safetensors(job):
    root, _ = job
    folder = root / "one" / "checkpoints" / "step_00000003"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["model.safetensors", "optimizer.rank0-of-2.safetensors",
                     "optimizer.rank1-of-2.safetensors", "train_state.json",
                     "train_state.safetensors"]
    index = json.loads((folder / "train_state.json").read_text())["optimizer"]["sharded"]
    assert index["files"] == ["optimizer.rank0-of-2.safetensors",
                              "optimizer.rank1-of-2.safetensors"]
    first = load_tensors(folder / "optimizer.rank0-of-2.safetensors")
    second = load_tensors(folder / "optimizer.rank1-of-2.safetensors")
    whole = load_tensors(folder / "model.safetensors")
    V = whole["tok_emb.weight"].shape[0]
    key = "optimizer.0.exp_avg"            # the first parameter: the (tied) token embedding
    assert index["tensors"][key] == {"shape": [V, 32],
                                     "rows": [[0, (V + 1) // 2], [(V + 1) // 2, V]]}
    assert first[key].shape == ((V + 1) // 2, 32) and second[key].shape == (V // 2, 32)
    assert not any(name.startswith("rng") for name in first), "RNG states live in process 0's file"
    # The weights at the top are whole (for generate and export) and load as a plain run.
    run = load_run(root / "one")
    assert run.model.tok_emb.weight.shape == (V, 32)
    assert torch.equal(load_tensors(root / "one" / "model.safetensors")["tok_emb.weight"],
                       whole["tok_emb.weight"])
    for path in (root / "one").rglob("*"):
        if path.is_file():
            assert path.suffix in (".json", ".jsonl", ".safetensors", ".png", ".lock"), path


@pytest.mark.slow
def test_an_fsdp_run_resumes_with_two_processes_bit_for_bit(job):
    _, losses = job
    assert losses["fsdp_first"] == losses["fsdp"][:3]
    assert losses["fsdp_resumed"] == losses["fsdp"][3:], "the same steps 4-6 as unbroken"


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["fsdp", "auto"])
def test_a_two_process_fsdp_checkpoint_resumes_in_one_process(job, parallel: str):
    # One process reads every saved process's rows (FSDP with one shard, or plain training).
    root, losses = job
    run_dir = root / ("one" if parallel == "fsdp" else "ddp")
    resumed: list[float] = []
    tiny_run(resumed, run_dir=run_dir, resume=True, parallel=parallel)
    assert len(resumed) == 3
    for step, (mine, two) in enumerate(zip(resumed, losses["fsdp"][3:]), start=4):
        assert mine == pytest.approx(two, rel=1e-5), f"step {step}: 1 process vs 2"
    steps = [r["step"] for r in read_metrics(run_dir)]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_one_process_fsdp_saves_and_resumes_as_plain_training(tmp_path: Path):
    # FSDP without torchrun: one shard in a group of its own, which stays for the model.
    plain_model = tiny_run([], max_steps=3)
    first: list[float] = []
    model = tiny_run(first, run_dir=tmp_path / "fsdp", parallel="fsdp", max_steps=3)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():               # the sharded model still answers, as the plain one
        torch.testing.assert_close(model(ids), plain_model(ids), rtol=1e-5, atol=1e-5)
    plain: list[float] = []
    tiny_run(plain, run_dir=tmp_path / "plain")
    folder = tmp_path / "fsdp" / "checkpoints" / "step_00000003"
    assert (folder / "optimizer.rank0-of-1.safetensors").is_file()
    then: list[float] = []
    tiny_run(then, run_dir=tmp_path / "fsdp", resume=True, parallel="ddp")   # no FSDP now
    assert first + then == pytest.approx(plain, rel=1e-6)
    a = load_tensors(tmp_path / "plain" / "model.safetensors")
    b = load_tensors(tmp_path / "fsdp" / "model.safetensors")
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=1e-5, atol=1e-6), name


def test_activation_checkpointing_runs_each_block_again_in_backward():
    calls = {"on": 0, "off": 0}
    results = {}
    for mode in ("off", "on"):
        tokenizer = Tokenizer(vocab_size=300).train(TEXT, progress=False)
        data = SlidingWindowDataset(tokenizer=tokenizer, n_context=16, texts=[TEXT])
        torch.manual_seed(0)
        model = B2lM(vocab_size=len(tokenizer), **MODEL, resid_dropout=0.1)
        model.blocks[0].register_forward_pre_hook(
            lambda *a, m=mode: calls.__setitem__(m, calls[m] + 1))
        losses: list[float] = []
        fit(model, data, config=TrainConfig(max_steps=3, batch_size=4, dtype="float32",
                                            activation_checkpointing=mode == "on"),
            progress=False, on_step=lambda r: losses.append(r["train_loss"]))
        results[mode] = (losses, model.tok_emb.weight.detach().clone())
        assert model.activation_checkpointing is False, "fit puts the model's setting back"
    assert calls == {"off": 3, "on": 6}, "recomputed once per step in the backward pass"
    assert results["on"][0] == results["off"][0], "dropout drew the same masks again"
    assert torch.equal(results["on"][1], results["off"][1])


def test_rows_split_as_torch_chunk():
    for n in (1, 5, 37, 64):
        for world in (1, 2, 3, 8):
            chunks = torch.arange(n).chunk(world)
            got = [rows(n, world, r) for r in range(world)]
            want = [(int(c[0]), int(c[-1]) + 1) for c in chunks]
            assert [g for g in got if g[0] < g[1]] == want, (n, world)


def test_auto_picks_ddp_while_a_replica_fits(monkeypatch):
    import basegpt.sharding as sharding
    model = B2lM(vocab_size=300, **MODEL)
    two = Dist(enabled=True, rank=0, world=2, device=torch.device("cpu"))
    need = 16 * model.num_parameters() + 1000
    monkeypatch.setattr(sharding, "device_memory", lambda device: int(need / 0.8) + 1)
    assert choose("auto", model, two, torch.device("cpu"), 1000)[0] == "ddp"
    monkeypatch.setattr(sharding, "device_memory", lambda device: int(need / 0.8) - 1)
    parallel, why = choose("auto", model, two, torch.device("cpu"), 1000)
    assert parallel == "fsdp" and "over 80%" in why, why
    assert choose("ddp", model, two, torch.device("cpu"), 0) == ("ddp", "asked")
    assert choose("auto", model, Dist(), torch.device("cpu"), 0)[0] == "none"
    assert choose("fsdp", model, Dist(), torch.device("cpu"), 0)[0] == "fsdp"


def test_bad_parallel_settings_are_clear_errors():
    with pytest.raises(ValueError, match="parallel='zero': choose one of 'auto', 'ddp', 'fsdp'"):
        TrainConfig(parallel="zero")
    with pytest.raises(ValueError, match=r"offload=True .* pass parallel='fsdp'"):
        TrainConfig(offload=True, parallel="ddp")
    tokenizer = Tokenizer(vocab_size=260).train(TEXT, progress=False)
    data = SlidingWindowDataset(tokenizer=tokenizer, n_context=16, texts=[TEXT])
    model = B2lM(vocab_size=len(tokenizer), **MODEL)
    with pytest.raises(ValueError, match="not float16.*dtype='bfloat16'"):
        fit(model, data, max_steps=1, batch_size=4, parallel="fsdp", dtype="float16",
            progress=False)


def test_the_summary_shows_each_strategys_memory_per_process():
    from basegpt.train_summary import summary
    model = B2lM(vocab_size=300, **MODEL)
    n = model.num_parameters()
    text = summary(model, TrainConfig(max_steps=1, batch_size=2, parallel="fsdp"),
                   torch.device("cpu"), torch.float32, 16, 1, 2, 1,
                   decisions={"parallel": "fsdp (asked)"})
    line = next(l for l in text.splitlines() if l.startswith("memory per process"))
    assert f"ddp {16 * n / 2**20:,.1f} MB" in line
    block = sum(p.numel() for p in model.blocks[0].parameters())
    fsdp = (16 * n // 2 + 4 * ((n - 2 * block) + 2 * block)) / 2**20
    assert f"fsdp {fsdp:,.1f} MB (1/2 of it" in line, line
    assert "parallel fsdp (asked)" in text
    one = summary(model, TrainConfig(max_steps=1, batch_size=2), torch.device("cpu"),
                  torch.float32, 16, 1, 1, 1, decisions={"parallel": "none (one process)"})
    assert "memory per process" not in one and "parallel" not in one


@pytest.mark.gpu
def test_one_process_fsdp_on_a_gpu_with_offload_follows_plain_training(tmp_path: Path):
    # The paths a CPU cannot take: NCCL, pinned offload memory, rows gathered onto the GPU
    # from CPU memory for the checkpoints (sharding.gather).
    plain: list[float] = []
    tiny_run(plain, device="cuda", run_dir=tmp_path / "plain")
    offloaded: list[float] = []
    model = tiny_run(offloaded, device="cuda", parallel="fsdp", offload=True,
                     run_dir=tmp_path / "offload")
    assert offloaded == pytest.approx(plain, rel=1e-4)
    assert model.tok_emb.weight.to_local().device.type == "cpu", "the rows live in CPU memory"
    a = load_tensors(tmp_path / "plain" / "model.safetensors")
    b = load_tensors(tmp_path / "offload" / "model.safetensors")
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=1e-4, atol=1e-6), name


@pytest.mark.slow
def test_a_checkpoint_missing_a_processs_rows_is_passed_over(job, tmp_path: Path):
    import shutil
    from basegpt.rundir import checkpoint_problem, latest_checkpoint
    root, _ = job
    run = tmp_path / "run"
    shutil.copytree(root / "two", run)          # checkpoints at steps 3 and 6
    newest = run / "checkpoints" / "step_00000006"
    (newest / "optimizer.rank1-of-2.safetensors").unlink()
    assert checkpoint_problem(newest) == "optimizer.rank1-of-2.safetensors is missing or unreadable"
    folder, skipped = latest_checkpoint(run)
    assert folder == run / "checkpoints" / "step_00000003", "the resume takes the one before"
    assert skipped == ["step_00000006: optimizer.rank1-of-2.safetensors is missing or unreadable"]
