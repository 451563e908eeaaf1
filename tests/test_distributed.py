"""Training under torchrun, 2 processes (gloo, CPU): they stop together, each resumes its own
random state, only process 0 prepares the data, the process group ends cleanly.
(tests/test_sharding.py holds DDP's and FSDP's losses to one process's.)"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from basegpt.recipe import saved_progress

SETUP = r'''
import json, os, sys, time, torch
torch.set_num_threads(1)
from basegpt import B2lM, SlidingWindowDataset, Tokenizer
from basegpt.train import TrainConfig, fit
from basegpt import distributed

text = ("It is a truth universally acknowledged, that a single man in possession of a good "
        "fortune, must be in want of a wife. ") * 20
tokenizer = Tokenizer(vocab_size=300).train(text, progress=False)
data = SlidingWindowDataset(tokenizer=tokenizer, n_context=16, texts=[text])
torch.manual_seed(0)
model = B2lM(vocab_size=len(tokenizer), n_embed=32, n_block=2, n_head=2, n_k=16, n_v=16,
             n_ff=64, n_context=16)
'''
"""The start of both scripts: a tokenizer, a dataset and a seeded tiny model."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BUDGET_SCRIPT = SETUP + r'''
rank = int(os.environ["RANK"])
time.sleep(1.0 * rank)        # the ranks' clocks start apart, as after uneven data loading
config = TrainConfig(max_minutes=0.04, batch_size=4, checkpoint_every=1)   # 2.4 s
result = fit(model, data, config=config, progress=False, run_dir=sys.argv[1])
json.dump({"stopped_by": result.stopped_by, "steps": result.steps},
          open(os.path.join(sys.argv[2], f"rank{rank}.json"), "w"))
'''


@pytest.mark.slow
def test_time_budget_stops_every_process_at_the_same_step(tmp_path: Path):
    # Each process used to read its own clock: one stopped while the other waited in the
    # next step's all-reduce (or saved a checkpoint the other never reached), and the job
    # crashed. The stop is now voted on in the step's loss all-reduce.
    script = tmp_path / "ddp_budget.py"
    script.write_text(BUDGET_SCRIPT)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                    f"--master_port={_free_port()}", str(script), str(tmp_path / "run"),
                    str(tmp_path)],
                   check=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1], f"the processes disagree on when to stop: {ranks}"
    assert ranks[0]["stopped_by"] == "max_minutes" and ranks[0]["steps"] > 1, ranks
    assert saved_progress(tmp_path / "run")["step"] == ranks[0]["steps"], \
        "the last checkpoint is the end"


RESUME_SCRIPT = SETUP + r'''
def train(run_dir, steps, resume):
    torch.manual_seed(0)
    model = B2lM(vocab_size=len(tokenizer), n_embed=32, n_block=2, n_head=2, n_k=16, n_v=16,
                 n_ff=64, n_context=16, embed_dropout=0.2, resid_dropout=0.2)
    config = TrainConfig(max_steps=steps, batch_size=2, batch_tokens=8 * 16, lr=3e-3,
                         schedule="constant", seed=5)
    fit(model, data, config=config, progress=False, run_dir=run_dir, resume=resume)

# fit seeds every process afresh (seed + rank) before a resume restores its state, so a
# resume in the same job draws what a resume in a new job would.
train(os.path.join(sys.argv[1], "straight"), 6, resume=False)
train(os.path.join(sys.argv[1], "split"), 3, resume=False)
train(os.path.join(sys.argv[1], "split"), 6, resume=True)
'''


@pytest.mark.slow
def test_a_resumed_job_draws_each_processs_own_dropout_masks(tmp_path: Path):
    # Each process seeds its RNG with seed + rank, so their dropout masks differ. A checkpoint
    # used to keep rank 0's RNG only: after a resume every process drew rank 0's masks.
    from basegpt.checkpoint import load_tensors
    from basegpt.train_state import read_metrics
    script = tmp_path / "ddp_resume.py"
    script.write_text(RESUME_SCRIPT)

    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                    f"--master_port={_free_port()}", str(script), str(tmp_path)],
                   check=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    straight = load_tensors(tmp_path / "straight" / "model.safetensors")
    split = load_tensors(tmp_path / "split" / "model.safetensors")
    for name, weight in straight.items():
        assert torch.equal(weight, split[name]), f"{name} differs after the resume"
    curve = [(r["step"], r["train_loss"]) for r in read_metrics(tmp_path / "straight")]
    assert [(r["step"], r["train_loss"]) for r in read_metrics(tmp_path / "split")] == curve


EXIT_SCRIPT = r"""
import atexit, functools, os, sys, torch
import torch.distributed as torch_dist
from basegpt import distributed

def gloo_threads():
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/comm") as f:
                names.append(f.read().strip())
        except OSError:                           # a thread that ended while we looked
            pass
    return sorted(name for name in names if "gloo" in name)

# atexit runs last-registered first: this check runs after basegpt's own teardown.
atexit.register(lambda: print("at exit:", torch_dist.is_initialized(), gloo_threads(), flush=True))
os.environ.update(WORLD_SIZE="2", RANK="0")       # take setup()'s torchrun path ...
real = torch_dist.init_process_group              # ... with a one-process group
torch_dist.init_process_group = functools.partial(real, rank=0, world_size=1)
dist = distributed.setup()

def train():
    # As in fit: the DistributedDataParallel wrapper lives in a function's frame.
    model = dist.wrap(torch.nn.Linear(4, 4))
    model(torch.ones(2, 4)).sum().backward()
    print("in the job:", torch_dist.is_initialized(), gloo_threads(), flush=True)
    if sys.argv[1] == "raise":
        raise RuntimeError("a failure while training")
train()
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="lists threads through /proc")
@pytest.mark.parametrize("ending", ["return", "raise"])
def test_the_process_groups_threads_end_before_interpreter_shutdown(tmp_path: Path, ending: str):
    # A gloo worker thread still letting go of the last collective's tensors when the
    # interpreter finalises aborts the process (SIGABRT, "terminate called without an active
    # exception"): a finished rank failed the torchrun job now and then. Destroying the group
    # joins those threads, but it used to leave them running: torch.distributed.nn, imported by
    # DistributedDataParallel after the group existed, kept the group as a default argument
    # (and the traceback of an uncaught exception kept fit's DDP wrapper and its group).
    script = tmp_path / "exit.py"
    script.write_text(EXIT_SCRIPT)
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
           "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(script), ending], capture_output=True, text=True,
                         timeout=120, env=env)
    if ending == "raise":
        assert out.returncode == 1, out.stderr
        assert "RuntimeError: a failure while training" in out.stderr, out.stderr
    else:
        assert out.returncode == 0, out.stderr
    assert "in the job: True ['gloo_tcp_loop', 'pt_gloo_runloop', 'pt_gloo_runloop']" in out.stdout, \
        out.stdout
    assert "at exit: False []" in out.stdout, out.stdout


def test_only_process_0_prepares_the_tokenizer_and_shards(tmp_path: Path, monkeypatch):
    # Every rank used to train the tokenizer and write shards into the same cache at once.
    import basegpt.data
    import basegpt.train
    from basegpt import distributed, recipe
    from basegpt.tokenizer import Tokenizer
    events: list[str] = []

    class Recording(distributed.Dist):
        def barrier(self) -> None:
            events.append("barrier")

    tokenizer = Tokenizer(vocab_size=260).train("abcabcabd " * 20, progress=False)
    monkeypatch.setattr(recipe, "get_tokenizer", lambda *a: events.append("tokenizer") or tokenizer)
    monkeypatch.setattr(recipe, "get_shards", lambda *a: events.append("shards") or tmp_path)
    monkeypatch.setattr(basegpt.data, "ShardDataset", lambda *a, **k: None)
    monkeypatch.setattr(basegpt.train, "fit", lambda *a, **k: "trained")
    spec = recipe.resolve_spec("seed", None, {"train": {"max_steps": 1}})
    order = {}
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "setup",
                            lambda rank=rank: Recording(enabled=True, rank=rank, world=2))
        events.clear()
        recipe.train_run(spec, tmp_path / f"run{rank}", progress=False, log=lambda m: None)
        order[rank] = list(events)
    assert order[0] == ["tokenizer", "shards", "barrier"], f"rank 0 fills the cache: {order[0]}"
    assert order[1] == ["barrier", "tokenizer", "shards"], f"the others wait, then read: {order[1]}"
