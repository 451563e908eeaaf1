"""Run directories stay whole: one writer at a time, checkpoints committed whole, a kill at
any moment resumed by a plain --resume, an overwrite that leaves nothing behind, signals that
wait for a save, and seeds that fix the whole run."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from helpers import tiny

from basegpt.checkpoint import load_run
from basegpt.config import TrainConfig
from basegpt.rundir import checkpoint_problem, latest_checkpoint, list_checkpoints
from basegpt.runlock import LOCK_FILE, RunLocked, run_lock
from basegpt.train import fit
from basegpt.train_state import read_metrics

TINY = ["--n-block", "2", "--n-embed", "32", "--n-head", "2", "--n-k", "16", "--n-v", "16",
        "--n-ff", "64", "--n-context", "32", "--batch-size", "4", "--vocab-size", "300",
        "--max-bytes", "200000", "--eval-tokens", "2048", "--device", "cpu"]
ROOT = Path(__file__).parent.parent

def run_python(code: str, *args: str, env: dict | None = None, timeout: float = 120
               ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def assert_same_weights(run: Path, other: Path, why: str) -> None:
    """The two runs' model.safetensors hold equal tensors. (Not equal bytes: safetensors
    writes the metadata's keys in no fixed order.)"""
    from safetensors.torch import load_file
    ours, theirs = load_file(run / "model.safetensors"), load_file(other / "model.safetensors")
    assert ours.keys() == theirs.keys(), why
    for name, tensor in ours.items():
        assert torch.equal(tensor, theirs[name]), f"{name}: {why}"


def leftovers(run: Path) -> list[str]:
    return [str(p.relative_to(run)) for p in run.rglob("*")
            if p.name.endswith(".tmp") or p.name.startswith(".trash-")]


# ------------------------------------------------------------------------ the lock

HOLD = """
import sys, time
from basegpt.runlock import run_lock
with run_lock(sys.argv[1], "basegpt train --out held"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_writer_is_refused_naming_the_holder(tmp_path: Path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run")], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLocked) as error:
            with run_lock(tmp_path / "run"):
                pass
        message = str(error.value)
        for part in (f"pid {holder.pid}", f"host {socket.gethostname()}",
                     "basegpt train --out held", f"kill {holder.pid}"):
            assert part in message, f"{part!r} not in: {message}"
    finally:
        holder.kill()
        holder.wait()
    # The kernel dropped the dead holder's lock: the next writer goes ahead, saying whose.
    with run_lock(tmp_path / "run") as lock:
        assert lock.previous is not None and lock.previous["pid"] == holder.pid, lock.previous
        assert json.loads((tmp_path / "run" / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (tmp_path / "run" / LOCK_FILE).exists(), "released: the lock file is gone"


def test_the_lock_is_reentrant_and_leaves_no_folder_it_made_empty(tmp_path: Path):
    with run_lock(tmp_path / "new") as outer:
        with run_lock(tmp_path / "new") as inner:      # train_run's lock around fit's
            assert inner is outer
        assert (tmp_path / "new" / LOCK_FILE).is_file(), "the outer block still holds it"
    assert not (tmp_path / "new").exists(), "a writer that wrote nothing leaves no folder"
    (tmp_path / "kept").mkdir()
    with run_lock(tmp_path / "kept"):
        pass
    assert (tmp_path / "kept").is_dir(), "a folder that was there before stays"


def test_without_flock_a_dead_pid_on_this_host_is_a_stale_lock(tmp_path: Path, monkeypatch):
    import basegpt.runlock
    monkeypatch.setattr(basegpt.runlock, "fcntl", None)
    run = tmp_path / "run"
    run.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = socket.gethostname()
    (run / LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": here, "started": "t"}))
    with run_lock(run) as lock:
        assert lock.previous["pid"] == dead.pid, "the dead pid's lock was taken over"
    (run / LOCK_FILE).write_text(json.dumps({"pid": os.getppid(), "host": here, "started": "t"}))
    with pytest.raises(RunLocked, match=f"pid {os.getppid()} on host {here}"):
        with run_lock(run):
            pass
    (run / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "t"}))
    with pytest.raises(RunLocked, match=f"if that process is gone, remove {run / LOCK_FILE}"):
        with run_lock(run):
            pass


SLOW_HOLDER = """
import fcntl, json, os, socket, sys, time
path = os.path.join(sys.argv[1], "run.lock")
os.makedirs(sys.argv[1], exist_ok=True)
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)           # the description comes a moment later, as in _acquire
time.sleep(0.3)
os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                         "started": "t", "command": "slow holder"}).encode())
time.sleep(60)
"""


def test_a_writer_that_comes_just_after_the_holder_still_names_it(tmp_path: Path):
    holder = subprocess.Popen([sys.executable, "-c", SLOW_HOLDER, str(tmp_path / "run")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLocked, match=f"pid {holder.pid} on host .*slow holder"):
            with run_lock(tmp_path / "run"):
                pass
    finally:
        holder.kill()
        holder.wait()


def test_tidying_leaves_other_processes_probe_files_alone(tmp_path: Path, monkeypatch):
    """check_writable's probe may sit in a run directory while its writer tidies it: the
    tidy keeps it, and a probe removed anyway is no error for check_writable."""
    import basegpt._io
    from basegpt.rundir import clean_leftovers
    (tmp_path / ".basegpt-probe.0123abcd.tmp").write_bytes(b"")
    assert clean_leftovers(tmp_path) == [] and (tmp_path / ".basegpt-probe.0123abcd.tmp").exists()
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc/self/fd to find the probe by its descriptor")
    write = os.write

    def write_then_lose_the_probe(fd, data):
        done = write(fd, data)
        os.unlink(os.readlink(f"/proc/self/fd/{fd}"))     # another process's tidy
        return done
    monkeypatch.setattr(basegpt._io.os, "write", write_then_lose_the_probe)
    basegpt._io.check_writable(tmp_path / "run")


# ------------------------------------------------------------------------ checkpoints

def test_resume_takes_the_newest_complete_checkpoint_and_says_which(tokenizer, data,
                                                                     tmp_path: Path):
    config = TrainConfig(max_steps=4, batch_size=4, checkpoint_every=2, seed=1)
    fit(tiny(tokenizer), data, config=config, run_dir=tmp_path / "run", progress=False)
    newest = tmp_path / "run" / "checkpoints" / "step_00000004"
    (newest / "train_state.json").write_text('{"progress": {"st')     # a damaged save
    assert "not valid JSON" in checkpoint_problem(newest)
    messages: list[str] = []
    result = fit(tiny(tokenizer), data, config=config, run_dir=tmp_path / "run",
                 resume=True, progress=False, log=messages.append)
    assert any("passing over incomplete checkpoint step_00000004" in m for m in messages), messages
    assert any(m.endswith("at step 2 from checkpoints/step_00000002") for m in messages), messages
    assert result.steps == 4 and [r["step"] for r in read_metrics(tmp_path / "run")] == [1, 2, 3, 4]


def test_a_save_cut_short_leaves_no_checkpoint_and_its_leftovers_are_removed(
        tokenizer, data, tmp_path: Path, monkeypatch):
    import basegpt.rundir
    run = tmp_path / "run"
    config = TrainConfig(max_steps=4, batch_size=4, checkpoint_every=2, seed=1)
    real = basegpt.rundir.save_train_state

    def crash_at_step_4(folder, optimizer, scaler, progress, rng_ranks=None):
        real(folder, optimizer, scaler, progress, rng_ranks)
        if progress["step"] == 4:
            raise OSError("the disk went away")
    monkeypatch.setattr(basegpt.rundir, "save_train_state", crash_at_step_4)
    with pytest.raises(OSError, match="went away"):
        fit(tiny(tokenizer), data, config=config, run_dir=run, progress=False)
    assert [p.name for p in list_checkpoints(run)] == ["step_00000002"], "4 never committed"
    assert leftovers(run) == [], "the temporary folder went with the exception"
    monkeypatch.undo()
    # What a kill -9 leaves instead: temporary files and folders, a half-removed checkpoint,
    # and (from an older basegpt) the training state at the top.
    (run / ".model.safetensors.0123abcd.tmp").write_bytes(b"half")
    (run / "checkpoints" / ".step_00000004.0123abcd.tmp").mkdir()
    (run / "checkpoints" / ".trash-step_00000001.0123abcd").mkdir()
    (run / "train_state.json").write_text("{}")
    messages: list[str] = []
    fit(tiny(tokenizer), data, config=config, run_dir=run, resume=True, progress=False,
        log=messages.append)
    assert leftovers(run) == [] and not (run / "train_state.json").exists(), sorted(run.rglob("*"))
    cleaned = next(m for m in messages if m.startswith("removed what interrupted saves left"))
    assert ".model.safetensors.0123abcd.tmp" in cleaned and "train_state.json" in cleaned, cleaned
    assert all(checkpoint_problem(f) is None for f in list_checkpoints(run))


def test_resume_before_the_first_checkpoint_starts_again_from_step_0(tokenizer, data,
                                                                     tmp_path: Path):
    run = tmp_path / "run"
    config = TrainConfig(max_steps=4, batch_size=4, seed=1)

    def crash(record):
        raise RuntimeError("power cut")
    with pytest.raises(RuntimeError, match="power cut"):
        fit(tiny(tokenizer), data, config=config, run_dir=run, progress=False, on_step=crash)
    with pytest.raises(ValueError, match="already holds a run; continue it with resume=True"):
        fit(tiny(tokenizer), data, config=config, run_dir=run, progress=False)
    messages: list[str] = []
    resumed = tiny(tokenizer)
    result = fit(resumed, data, config=config, run_dir=run, resume=True, progress=False,
                 log=messages.append)
    assert any("no complete checkpoint yet" in m and "from step 0" in m for m in messages), messages
    straight = tiny(tokenizer)
    fit(straight, data, config=config, progress=False)
    assert result.steps == 4 and [r["step"] for r in read_metrics(run)] == [1, 2, 3, 4]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), f"{name}: the restart is the run from scratch"


def test_overwrite_leaves_nothing_of_the_old_run(tokenizer, data, tmp_path: Path):
    run = tmp_path / "run"
    config = TrainConfig(max_steps=4, batch_size=4, checkpoint_every=2, eval_every=2, seed=1)
    fit(tiny(tokenizer), data, data, config, run_dir=run, progress=False)
    assert (run / "best").is_dir() and list_checkpoints(run)

    def crash(record):
        raise RuntimeError("stopped before the first checkpoint")
    with pytest.raises(RuntimeError):
        fit(tiny(tokenizer, n_embed=48), data, data, dataclasses.replace(config, checkpoint_every=0),
            run_dir=run, overwrite=True, progress=False, on_step=crash)
    names = sorted(p.name for p in run.iterdir())
    assert names == ["config.json", "metrics.jsonl", "run.json", "tokenizer.json"], \
        f"only the new run's start is there: {names}"
    assert json.loads((run / "config.json").read_text())["model"]["n_embed"] == 48
    result = fit(tiny(tokenizer, n_embed=48), data, data, config, run_dir=run, resume=True,
                 progress=False)
    assert result.steps == 4 and load_run(run).model.config.n_embed == 48


# Every fsync takes a little longer, so saves fill much of a run and what runs beside them
# (a reader, a kill) meets them: on a real disk a checkpoint is not instant either.
SLOW_FSYNC = """
import os, sys, time
fsync = os.fsync
def slow_fsync(fd):
    time.sleep(0.01)
    fsync(fd)
os.fsync = slow_fsync
"""

TRAIN_SLOWLY = SLOW_FSYNC + """
import torch
from basegpt import B2lM, SlidingWindowDataset, Tokenizer
from basegpt.train import TrainConfig, fit
text = "readers watch a run while it trains. " * 60
tok = Tokenizer(vocab_size=300).train(text, progress=False)
data = SlidingWindowDataset(tokenizer=tok, n_context=16, texts=[text])
torch.manual_seed(0)
model = B2lM(vocab_size=len(tok), n_embed=32, n_block=2, n_head=2, n_k=16, n_v=16, n_ff=64,
             n_context=16)
fit(model, data, data, TrainConfig(max_steps=15, batch_size=4, checkpoint_every=1, eval_every=5,
                                   keep_checkpoints=1), run_dir=sys.argv[1], progress=False)
"""


@pytest.mark.slow
def test_readers_never_see_a_half_written_run_while_it_trains(tmp_path: Path):
    from basegpt.insight import run_info
    run = tmp_path / "run"
    writer = subprocess.Popen([sys.executable, "-c", TRAIN_SLOWLY, str(run)], cwd=ROOT,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}, stderr=subprocess.PIPE,
                              text=True)
    loads = 0
    try:
        while writer.poll() is None:
            if not (run / "model.safetensors").exists():   # before the first checkpoint
                time.sleep(0.01)
                continue
            loaded = load_run(run)
            info = run_info(run)
            best = load_run(run / "best") if (run / "best" / "config.json").exists() else None
            assert info["checkpoints"] and info["progress"]["steps"] >= 1, info["progress"]
            assert loaded.model.config.n_embed == 32 and (best is None or best.model)
            loads += 1
    finally:
        writer.kill()
        _, err = writer.communicate()
    assert writer.returncode == 0, err[-2000:]
    assert loads >= 5, f"only {loads} reads happened while the run trained"
    assert all(checkpoint_problem(f) is None for f in list_checkpoints(run))


# ------------------------------------------------------------------------ signals

SAVE_SIGNAL = """
import json, os, signal, sys, torch
import basegpt.train
from basegpt import B2lM, SlidingWindowDataset, Tokenizer
from basegpt.train import TrainConfig, fit
text = "a tiny text to train on, again and again. " * 40
tok = Tokenizer(vocab_size=300).train(text, progress=False)
data = SlidingWindowDataset(tokenizer=tok, n_context=16, texts=[text])
second = getattr(signal, sys.argv[2])
real = basegpt.train.save_checkpoint
def save_while_signalled(*args, **kwargs):
    os.kill(os.getpid(), second)            # the second Ctrl-C / SIGTERM, during the save
    return real(*args, **kwargs)
basegpt.train.save_checkpoint = save_while_signalled
def first_signal(record):
    if record["step"] == 3:
        os.kill(os.getpid(), signal.SIGINT)
torch.manual_seed(0)
model = B2lM(vocab_size=len(tok), n_embed=32, n_block=2, n_head=2, n_k=16, n_v=16, n_ff=64,
             n_context=16)
result = fit(model, data, config=TrainConfig(max_steps=50, batch_size=4), run_dir=sys.argv[1],
             progress=False, on_step=first_signal)
print(json.dumps({"stopped_by": result.stopped_by, "steps": result.steps}))
"""


@pytest.mark.parametrize("second", ["SIGINT", "SIGTERM"])
def test_a_second_signal_during_the_final_save_waits_for_it(tmp_path: Path, second: str):
    proc = run_python(SAVE_SIGNAL, str(tmp_path / "run"), second)
    assert proc.returncode == 0, f"exit {proc.returncode}: the save was killed\n{proc.stderr[-2000:]}"
    assert json.loads(proc.stdout) == {"stopped_by": "signal", "steps": 3}, proc.stdout
    folder, _ = latest_checkpoint(tmp_path / "run")
    assert folder is not None and folder.name == "step_00000003", "step 3 is saved, whole"


# ------------------------------------------------------------------------ the CLI, for real

def basegpt(*args: str, cache: Path, cwd: Path, runner: str | None = None, **popen
            ) -> subprocess.Popen:
    env = {**os.environ, "BASEGPT_CACHE": str(cache), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = ([sys.executable, "-c", runner] if runner else [sys.executable, "-m", "basegpt"])
    return subprocess.Popen([*command, *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


KILL_STEPS = ["--max-steps", "200", "--checkpoint-every", "1", "--eval-every", "50", "--seed", "7"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """(cache, work, run) of an uninterrupted `basegpt train` (it also fills the cache)."""
    root = tmp_path_factory.mktemp("cli")
    cache, work = root / "cache", root / "work"
    work.mkdir()
    code, _, err = finish(basegpt("train", *TINY, *KILL_STEPS, "--out", "straight", "--quiet",
                                  cache=cache, cwd=work))
    assert code == 0, err[-3000:]
    return cache, work, work / "straight"


SLOW_DISK = SLOW_FSYNC + """
from basegpt.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_kill_9_at_random_moments_then_a_plain_resume_finishes_the_same_run(straight):
    cache, work, reference = straight
    run = work / "killed"
    moments = random.Random(18)
    proc = basegpt("train", *TINY, *KILL_STEPS, "--out", "killed", cache=cache, cwd=work,
                   runner=SLOW_DISK)
    deadline = time.monotonic() + 120
    while not list_checkpoints(run) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)                          # from the first checkpoint on, --resume works
    resumed_from = None                           # the step the running process resumed at
    for kill in range(10):
        time.sleep(moments.uniform(0.0, 2.5) if kill else moments.uniform(0.0, 0.5))
        proc.kill()
        code, _, err = finish(proc)
        assert code == -signal.SIGKILL, f"kill {kill}: it ended by itself ({code}):\n{err[-2000:]}"
        if resumed_from is not None and "resumed killed at step" in err:
            assert f"resumed killed at step {resumed_from} from" in err, \
                f"kill {kill}: resumed elsewhere than at step {resumed_from}:\n{err[-2000:]}"
        assert all(checkpoint_problem(f) is None for f in list_checkpoints(run)), \
            f"kill {kill}: a checkpoint folder is incomplete: {sorted(run.rglob('*'))}"
        newest, _ = latest_checkpoint(run)
        steps = [r["step"] for r in read_metrics(run)]
        saved = int(newest.name.removeprefix("step_"))
        assert steps and steps[-1] - saved <= 1, \
            f"kill {kill}: logged to step {steps[-1]} but the newest checkpoint is {saved}"
        resumed_from = saved
        proc = basegpt("train", "--resume", "killed", cache=cache, cwd=work, runner=SLOW_DISK)
    proc.kill()
    finish(proc)
    newest, _ = latest_checkpoint(run)
    saved = int(newest.name.removeprefix("step_"))
    code, out, err = finish(basegpt("train", "--resume", "killed", cache=cache, cwd=work))
    assert code == 0, err[-3000:]
    resumed_line = f"resumed killed at step {saved} from checkpoints/step_{saved:08d}"
    assert resumed_line in err, f"{resumed_line!r} not in:\n{err[-3000:]}"
    assert leftovers(run) == [] and not (run / LOCK_FILE).exists(), sorted(run.rglob("*"))
    assert [r["step"] for r in read_metrics(run)] == list(range(1, 201)), "each step once"
    assert_same_weights(run, reference, "ten kills and resumes end with the uninterrupted "
                                        "run's weights, bit for bit")


@pytest.mark.slow
def test_two_trainings_into_one_directory_never_mix(straight):
    cache, work, _ = straight
    a = basegpt("train", *TINY, "--max-steps", "3", "--out", "race", cache=cache, cwd=work)
    b = basegpt("train", *TINY, "--n-embed", "48", "--max-steps", "3", "--out", "race",
                cache=cache, cwd=work)
    (code_a, _, err_a), (code_b, _, err_b) = finish(a), finish(b)
    assert sorted([code_a, code_b]) == [0, 2], (code_a, err_a[-1500:], code_b, err_b[-1500:])
    loser = (err_a if code_a else err_b).strip().splitlines()[-1]
    assert ("in use by another basegpt process: pid" in loser
            or "already holds a run" in loser), loser
    winner = 32 if code_a == 0 else 48
    assert load_run(work / "race").model.config.n_embed == winner, "one run's files, whole"


@pytest.mark.slow
def test_resume_while_another_process_trains_is_refused(straight, tmp_path: Path):
    cache, work, reference = straight
    with run_lock(reference, "basegpt train --out straight"):
        code, _, err = finish(basegpt("train", "--resume", str(reference), "--max-steps",
                                      "300", cache=cache, cwd=work))
    assert code == 2 and "Traceback" not in err, err[-2000:]
    assert f"is in use by another basegpt process: pid {os.getpid()}" in err, err


@pytest.mark.slow
def test_sigterm_during_start_up_ends_cleanly(tmp_path: Path):
    proc = basegpt("train", *TINY[:-8], "--vocab-size", "3000", "--max-bytes", "3000000",
                   "--device", "cpu", "--max-steps", "2", "--out", "run",
                   cache=tmp_path / "cache", cwd=tmp_path)
    for line in proc.stderr:                       # tokenizer training takes seconds
        if line.startswith("tokenizer: training"):
            break
    proc.send_signal(signal.SIGTERM)
    code, _, err = finish(proc)
    assert code == 128 + signal.SIGTERM, f"exit {code}:\n{err[-2000:]}"
    assert "basegpt: terminated (SIGTERM)" in err and "Traceback" not in err, err[-2000:]
    assert not (tmp_path / "run").exists(), "nothing was written, so no folder is left"


# ------------------------------------------------------------------------ seeds

SEEDED = """
import hashlib, json, sys, torch
from torch.utils.data import DataLoader
from basegpt import B2lM, SlidingWindowDataset, Tokenizer
text = "the seed fixes init, data order and dropout. " * 30
tok = Tokenizer(vocab_size=300).train(text, progress=False)
data = SlidingWindowDataset(tokenizer=tok, n_context=16, texts=[text])
torch.manual_seed(int(sys.argv[1]))
model = B2lM(vocab_size=len(tok), n_embed=32, n_block=2, n_head=2, n_k=16, n_v=16, n_ff=64,
             n_context=16, embed_dropout=0.1, resid_dropout=0.1)
result = model.train(DataLoader(data, batch_size=4, shuffle=True), epochs=2, seed=int(sys.argv[1]),
                     progress=False)
digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters()))
print(json.dumps({"losses": [loss for _, loss in result.train_loss], "weights": digest.hexdigest()}))
"""


def test_the_same_seed_gives_the_same_run_in_fresh_processes():
    runs = [json.loads(run_python(SEEDED, seed, env={"PYTHONHASHSEED": hash_seed}).stdout)
            for seed, hash_seed in (("3", "1"), ("3", "2"), ("4", "1"))]
    assert runs[0] == runs[1], "model.train(loader, epochs=2) with seed 3, twice: bit for bit"
    assert runs[2]["weights"] != runs[0]["weights"], "another seed, another run"


def test_train_run_seed_fixes_the_initial_weights(tmp_path: Path, monkeypatch, straight):
    from basegpt.recipe import resolve_spec, train_run
    cache, _, _ = straight
    monkeypatch.setenv("BASEGPT_CACHE", str(cache))
    spec = resolve_spec(None, None, {"model": {"n_block": 2, "n_embed": 32, "n_head": 2,
                                               "n_k": 16, "n_v": 16, "n_ff": 64,
                                               "n_context": 32},
                                     "train": {"max_steps": 2, "batch_size": 4, "seed": 5,
                                               "eval_tokens": 2048, "device": "cpu"},
                                     "data": {"vocab_size": 300, "max_bytes": 200000}})
    for caller_seed, name in enumerate(("a", "b")):
        torch.manual_seed(caller_seed)                        # the caller's RNG differs
        train_run(spec, tmp_path / name, progress=False, log=lambda m: None)
    assert_same_weights(tmp_path / "a", tmp_path / "b",
                        "same spec and seed, same weights: the initial weights are seeded too")


# ------------------------------------------------------------------------ import and export

def test_import_over_a_trained_run_leaves_none_of_it_and_waits_for_no_one(
        tokenizer, data, tmp_path: Path):
    from basegpt.interop.hf import export_hf, import_hf
    model = tiny(tokenizer, n_head=4, n_k=8, n_v=8, norm_position="pre", positional="learned",
                 activation="gelu")
    export_hf((model, tokenizer), tmp_path / "hf")
    assert not (tmp_path / "hf" / LOCK_FILE).exists(), "export released its lock"
    run = tmp_path / "run"
    fit(tiny(tokenizer), data, data, TrainConfig(max_steps=2, batch_size=4, eval_every=1),
        run_dir=run, progress=False)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLocked, match=f"pid {holder.pid}"):
            import_hf(tmp_path / "hf", run, overwrite=True)
        with pytest.raises(RunLocked, match=f"pid {holder.pid}"):
            export_hf((model, tokenizer), run)
    finally:
        holder.kill()
        holder.wait()
    import_hf(tmp_path / "hf", run, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "model.safetensors",
                                                     "tokenizer.json"], sorted(run.iterdir())
    torch.testing.assert_close(load_run(run).model(torch.tensor([[1, 2, 3]])),
                               model.eval()(torch.tensor([[1, 2, 3]])))


def test_a_run_whose_only_state_is_at_the_top_is_not_restarted_over(tokenizer, data,
                                                                     tmp_path: Path):
    """An older basegpt kept train_state.* at the top as well; with checkpoints/ deleted,
    that is the run's only state, and a resume must not start over and remove it."""
    import shutil
    run = tmp_path / "run"
    config = TrainConfig(max_steps=2, batch_size=4, seed=1)
    fit(tiny(tokenizer), data, config=config, run_dir=run, progress=False)
    step = run / "checkpoints" / "step_00000002"
    for name in ("train_state.json", "train_state.safetensors"):
        shutil.copy(step / name, run / name)
    shutil.rmtree(run / "checkpoints")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(ValueError, match="keeps its training state at the top"):
        fit(tiny(tokenizer), data, config=dataclasses.replace(config, max_steps=4), run_dir=run,
            resume=True, progress=False)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
