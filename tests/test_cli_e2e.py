"""End to end: the real `basegpt` command in subprocesses, as a user meets it (issue 8).

    train (built-in corpus, a few steps) -> generate -> eval -> info -> plot -> attention
    -> train --resume

One tiny run is trained once for the module; each later step is its own test on that run
(resume works on a copy, so the order of the tests does not matter). Then the user-error
paths: each must exit with code 2 and one line on stderr, never a traceback.

Marked slow: ~30 Python processes that each import torch take 70-90 s on a busy 2-core machine
(deselect with -m "not slow").
"""

import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from basegpt.recipe import saved_progress
from helpers import default_ctrl_c

TINY = ["--n-block", "2", "--n-embed", "32", "--n-head", "2", "--n-k", "16", "--n-v", "16",
        "--n-ff", "64", "--n-context", "32", "--batch-size", "4", "--vocab-size", "300",
        "--max-bytes", "200000", "--eval-tokens", "2048", "--device", "cpu"]
STEPS = 3
PNG = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.slow


def basegpt(*args: str, cache: Path, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "BASEGPT_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "basegpt", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, (f"{' '.join(proc.args[2:])} exited {proc.returncode}:\n"
                                  f"{proc.stderr[-3000:]}")
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.stdout


def user_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    """Exit code 2 and one line on stderr (no traceback) that names the problem."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, f"exit {proc.returncode}, wanted 2; stderr:\n{proc.stderr[-2000:]}"
    assert len(lines) == 1, f"wanted one line on stderr, got {len(lines)}:\n{proc.stderr[-2000:]}"
    for word in words:
        assert word in lines[0], f"{word!r} not in the message: {lines[0]}"
    return lines[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(run dir, cache dir, work dir) after `basegpt train` with a tiny budget."""
    root = tmp_path_factory.mktemp("e2e")
    cache, work = root / "cache", root / "work"
    work.mkdir()
    proc = basegpt("train", *TINY, "--max-steps", str(STEPS), "--out", "run", "--quiet",
                   cache=cache, cwd=work)
    out = ok(proc)
    assert f"trained {STEPS} steps" in out, out
    assert "sample (prompt 'def ')" in out, f"the built-in corpus is code: a code prompt\n{out}"
    assert "basegpt generate run --prompt 'def '" in out, out
    (work / "train.out").write_text(out)
    return work / "run", cache, work


def test_train_writes_a_complete_run(world):
    run, cache, _ = world
    for name in ("config.json", "model.safetensors", "tokenizer.json", "metrics.jsonl",
                 "loss.png", "best/best.json", f"checkpoints/step_{STEPS:08d}/train_state.json",
                 f"checkpoints/step_{STEPS:08d}/train_state.safetensors"):
        assert (run / name).is_file(), f"{name} missing from the run directory"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1)), records
    assert "val_loss" in records[-1] and "val_bpb" in records[-1], records[-1]
    assert any((cache / "tokenizers").glob("*.json")), "the tokenizer was not cached"
    assert any((cache / "shards").glob("*/meta.json")), "the shards were not cached"


def test_generate(world):
    run, cache, work = world
    args = ("generate", str(run), "--prompt", "def ", "--max-new-tokens", "20", "--seed", "0",
            "--no-stream")
    out = ok(basegpt(*args, cache=cache, cwd=work))
    assert out.startswith("def ") and len(out) > len("def "), f"not a continuation: {out!r}"
    assert ok(basegpt(*args, cache=cache, cwd=work)) == out, "same seed should give the same text"


def test_eval_on_the_runs_validation_split_equals_its_last_val_loss(world):
    run, cache, work = world
    scores = json.loads(ok(basegpt("eval", str(run), "--json", cache=cache, cwd=work)))
    last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert math.isclose(scores["loss"], last["val_loss"], rel_tol=1e-5), (scores, last)
    assert math.isclose(scores["bits_per_byte"], last["val_bpb"], rel_tol=1e-5), (scores, last)
    assert scores["tokens"] == last["val_tokens"], (scores, last)


def test_eval_on_a_file_and_on_text(world):
    run, cache, work = world
    (work / "held_out.txt").write_text("def add(a, b):\n    return a + b\n" * 20, encoding="utf-8")
    out = ok(basegpt("eval", str(run), "held_out.txt", "--json", cache=cache, cwd=work))
    scores = json.loads(out)
    assert math.isclose(scores["perplexity"], math.exp(scores["loss"]), rel_tol=1e-9), scores
    assert 0 < scores["bits_per_byte"] < 16 and scores["tokens"] > 100, scores
    assert "1 file(s)" in scores["source"], scores
    text = ok(basegpt("eval", str(run), "--text", "import os\nprint(os.getcwd())\n",
                      cache=cache, cwd=work))
    assert "loss" in text and "perplexity" in text and "bits per byte" in text, text


def test_info(world):
    run, cache, work = world
    info = json.loads(ok(basegpt("info", str(run), "--json", cache=cache, cwd=work)))
    params = info["parameters"]
    parts = (params["embedding"] + params["positional"] + sum(b["total"] for b in params["blocks"])
             + params["final_norm"] + params["head"])
    assert parts == params["total"], f"components add up to {parts}, total {params['total']}"
    from basegpt.checkpoint import load_run
    assert params["total"] == load_run(run).model.num_parameters(), params
    assert len(params["blocks"]) == 2 and all(
        b["total"] == b["attention"] + b["feedforward"] + b["norms"] for b in params["blocks"]), params
    assert info["progress"]["steps"] == STEPS, info["progress"]
    assert info["progress"]["tokens"] == STEPS * 4 * 32, info["progress"]     # batch x context
    assert info["best"]["step"] == STEPS, info["best"]
    tok = info["tokenizer"]
    assert tok["matches_model"] and tok["size"] == 300 == info["model"]["vocab_size"], tok
    human = ok(basegpt("info", str(run), cache=cache, cwd=work))
    for phrase in ("parameters:", "block 1", "best validation: val_loss", tok["hash"][:12]):
        assert phrase in human, f"{phrase!r} not in info's output:\n{human}"


def test_plot(world):
    run, cache, work = world
    out = ok(basegpt("plot", str(run), "--out", "curves.png", cache=cache, cwd=work))
    assert "curves.png" in out and (work / "curves.png").read_bytes()[:8] == PNG, out


def test_attention(world):
    run, cache, work = world
    out = ok(basegpt("attention", str(run), "--prompt", "def add(a, b):", "--out", "attn.png",
                     cache=cache, cwd=work))
    assert (work / "attn.png").read_bytes()[:8] == PNG, out
    assert out.count("layer ") == 4, f"2 layers x 2 heads expected in the summary:\n{out}"
    one = ok(basegpt("attention", str(run), "--prompt", "x = 1", "--layer", "1", "--head", "0",
                     "--out", "one.png", cache=cache, cwd=work))
    assert "layer 1 head 0" in one and "layer 0" not in one, one
    assert (work / "one.png").read_bytes()[:8] == PNG
    user_error(basegpt("attention", str(run), "--prompt", "x", "--head", "7", "--out", "x.png",
                       cache=cache, cwd=work), "--head 7", "0..1")


def test_train_resume_continues_to_more_steps(world, tmp_path):
    run, cache, work = world
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    out = ok(basegpt("train", "--resume", str(copy), "--max-steps", str(STEPS + 2), "--quiet",
                     cache=cache, cwd=work))
    assert f"trained {STEPS + 2} steps" in out, out
    records = [json.loads(line) for line in (copy / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, STEPS + 3)), "resume should append steps"
    assert saved_progress(copy)["step"] == STEPS + 2, saved_progress(copy)


def test_the_printed_resume_command_trains_more_steps(world, tmp_path):
    """The run stopped by --max-steps, so `next:` raises --max-steps (--max-minutes, the
    budget that did not stop it, would train nothing more)."""
    run, cache, work = world
    line = next(line for line in (work / "train.out").read_text().splitlines()
                if "basegpt train --resume" in line)
    command = shlex.split(line.split("#")[0])
    assert command == ["basegpt", "train", "--resume", "run", "--max-steps", str(2 * STEPS)], \
        f"resume hint: {line}"
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    out = ok(basegpt("train", "--resume", str(copy), *command[4:], "--quiet", cache=cache, cwd=work))
    assert f"trained {2 * STEPS} steps" in out, out


def test_a_used_up_budget_is_a_user_error_on_resume(world, tmp_path):
    run, cache, work = world
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    proc = basegpt("train", "--resume", str(copy), "--max-steps", str(STEPS), cache=cache, cwd=work)
    user_error(proc, f"this run has used {STEPS} of its {STEPS}-step budget",
               f"--max-steps > {STEPS}")
    assert "clamping frac" not in proc.stderr, "no tqdm warning"


def test_training_on_your_own_text_samples_from_its_held_out_text(tmp_path):
    """Not code: the sample prompt is the first words of the validation text (the last 5%
    of a single file), and the generate hint uses it."""
    n = 2000
    (tmp_path / "notes.txt").write_text("".join(f"line {i} of my notes\n" for i in range(n)))
    out = ok(basegpt("train", "notes.txt", *TINY, "--max-steps", "1", "--out", "r", "--quiet",
                     cache=tmp_path / "cache", cwd=tmp_path))
    prompt = re.search(r"sample \(prompt '(.*)'\)", out).group(1)
    assert re.fullmatch(r"line \d+ of", prompt), f"a line start of the text: {prompt!r}"
    assert int(prompt.split()[1]) >= 0.9 * n, f"{prompt!r} is not from the held-out end"
    assert f"basegpt generate r --prompt '{prompt}'" in out, out
    # The run finds its text again from another folder (it records the input's absolute path).
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = ok(basegpt("train", "--resume", str(tmp_path / "r"), "--max-steps", "2", "--quiet",
                     cache=tmp_path / "cache", cwd=elsewhere))
    assert "trained 2 steps" in out, out


def test_ctrl_c_saves_the_run_and_exits_130(world, tmp_path):
    """SIGINT during training: the step finishes, the run is saved, exit code 130. In
    `generate --interactive` (waiting for a prompt): exit code 130 too."""
    run, cache, work = world
    env = {**os.environ, "BASEGPT_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    out_dir = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "basegpt", "train", *TINY, "--max-steps",
                             "1000000", "--out", str(out_dir), "--quiet"], cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_ctrl_c)
    deadline = time.monotonic() + 120
    while not (out_dir / "metrics.jsonl").is_file() and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.05)                                  # until the first step is done
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, f"exit {proc.returncode}, wanted 130:\n{err[-2000:]}"
    assert "stopped by signal" in out and "Traceback" not in err, (out, err[-2000:])
    steps = [json.loads(line)["step"] for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    saved = saved_progress(out_dir)["step"]
    assert saved == steps[-1] >= 1, f"saved at step {saved}, trained to {steps[-1]}"

    proc = subprocess.Popen([sys.executable, "-m", "basegpt", "generate", str(run),
                             "--interactive"], cwd=work, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_ctrl_c)
    assert "type a prompt" in proc.stderr.readline(), "waiting for a prompt"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip() == "basegpt: interrupted", (proc.returncode, err)


def test_a_second_resume_keeps_the_flags_of_the_first(world, tmp_path):
    run, cache, work = world
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    ok(basegpt("train", "--resume", str(copy), "--max-steps", str(STEPS + 1), "--lr", "0.0005",
               "--quiet", cache=cache, cwd=work))
    ok(basegpt("train", "--resume", str(copy), "--max-steps", str(STEPS + 2), "--quiet",
               cache=cache, cwd=work))
    config = json.loads((copy / "config.json").read_text())
    assert config["train"]["lr"] == 0.0005 and config["spec"]["train"]["lr"] == 0.0005, \
        "the first resume's --lr is still in force"
    assert config["train"]["max_steps"] == STEPS + 2, config["train"]
    last = [json.loads(line) for line in (copy / "metrics.jsonl").read_text().splitlines()][-1]
    warmup = config["train"]["warmup_steps"]
    assert last["step"] == STEPS + 2 <= warmup, (last, warmup)      # in warmup: lr * step / warmup
    assert math.isclose(last["lr"], 0.0005 * (STEPS + 2) / warmup), f"trained at lr 0.0005: {last}"


def test_generate_from_best(world):
    run, cache, work = world
    out = ok(basegpt("generate", str(run / "best"), "--prompt", "def ", "--max-new-tokens", "10",
                     "--seed", "0", "--no-stream", cache=cache, cwd=work))
    assert out.startswith("def "), f"best/ loads as a run of its own: {out!r}"


# ------------------------------------------------------------------------ user errors

@pytest.mark.parametrize("command", [["eval"], ["info"], ["plot"],
                                     ["attention", "--prompt", "x"], ["train", "--resume"]])
def test_missing_run_dir_is_a_user_error(tmp_path, command):
    args = [command[0], "--resume", "no_such_run"] if command[0] == "train" else \
        [command[0], "no_such_run", *command[1:]]
    user_error(basegpt(*args, cache=tmp_path / "cache", cwd=tmp_path), "no_such_run")


def test_bad_flag_is_a_user_error(tmp_path):
    line = user_error(basegpt("train", "--no-such-flag", cache=tmp_path, cwd=tmp_path))
    assert "--no-such-flag" in line, line


def test_bad_config_value_is_a_user_error(tmp_path):
    user_error(basegpt("train", "--norm", "nonsense", "--out", "r", cache=tmp_path, cwd=tmp_path),
               "norm", "nonsense")
    assert not (tmp_path / "r").exists(), "a bad config must fail before anything is written"


def test_unknown_key_in_config_file_suggests_the_nearest(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"model": {"n_embd": 32}}))
    user_error(basegpt("train", "--config", "bad.json", "--out", "r", cache=tmp_path, cwd=tmp_path),
               "'n_embd'", "did you mean 'n_embed'")


def test_bad_device_is_a_user_error_before_any_work(tmp_path):
    line = user_error(basegpt("train", "--device", "cdua", "--out", "r", cache=tmp_path / "cache",
                              cwd=tmp_path), "device='cdua'", "did you mean 'cuda'")
    assert "cuda:N" in line, line
    assert not (tmp_path / "cache").exists(), "no tokenizer or shards were made first"
    assert not (tmp_path / "r").exists(), "and no run directory"
