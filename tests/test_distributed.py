"""Data-parallel training: 2 processes (gloo, CPU) follow the same loss as one process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = r'''
import json, sys, torch
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
batch_size, accum = int(sys.argv[2]), int(sys.argv[3])
losses = []
config = TrainConfig(max_steps=6, batch_size=batch_size, batch_tokens=8 * 16, lr=3e-3)
fit(model, data, config=config, progress=False, on_step=lambda r: losses.append(r["train_loss"]))
if distributed.setup().is_main:
    json.dump({"losses": losses, "weight": model.tok_emb.weight[:3, :3].tolist()},
              open(sys.argv[1], "w"))
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(tmp_path: Path):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    single = tmp_path / "single.json"
    subprocess.run([sys.executable, str(script), str(single), "8", "1"], check=True, timeout=300)
    double = tmp_path / "double.json"
    # each of 2 processes: micro-batch 2 x 2 accumulation = 4 rows; global batch 8 rows
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                    f"--master_port={_free_port()}", str(script), str(double), "2", "2"],
                   check=True, timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    one, two = json.loads(single.read_text()), json.loads(double.read_text())
    assert len(two["losses"]) == 6, "six steps under torchrun"
    for step, (a, b) in enumerate(zip(one["losses"], two["losses"])):
        assert a == pytest.approx(b, rel=1e-5), f"step {step}: 1 process {a} vs 2 processes {b}"
    flat_one = [x for row in one["weight"] for x in row]
    flat_two = [x for row in two["weight"] for x in row]
    assert flat_two == pytest.approx(flat_one, rel=1e-4, abs=1e-6), "same weights after 6 steps"
