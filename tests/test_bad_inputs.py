"""Bad input, one table: every case must end in a clear error, never a traceback, and change
nothing on disk.

CLI cases call `basegpt.cli.main(argv)` in-process on one tiny trained run (made once for the
module) and check: exit code 2, one line on stderr that names the problem (key words: the
flag, the field, the file), no traceback, and no file created, changed or removed anywhere
the command could write (the run, its cache, the working directory). A few go through a real
`python -m basegpt` process, as a user meets them. API cases check the exception's type and
the key parts of its message: the argument, the type given and the type wanted.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

import basegpt.model.memory as memory
from basegpt import B2lM, SlidingWindowDataset, Tokenizer
from basegpt.api import load_run as api_load_run
from basegpt.checkpoint import init_from_run, load_run, read_config
from basegpt.cli import main
from basegpt.config import ModelConfig, TrainConfig
from basegpt.generate import generate, generate_ids, score
from basegpt.recipe import load_config_file, load_preset, merge_specs, read_spec
from basegpt.train_state import check_same_run

TINY = ["--n-block", "2", "--n-embed", "32", "--n-head", "2", "--n-k", "16", "--n-v", "16",
        "--n-ff", "64", "--n-context", "16", "--batch-size", "4", "--vocab-size", "300",
        "--max-bytes", "30000", "--eval-tokens", "256", "--device", "cpu", "--quiet"]
GiB = 2**30
BIG_SEED = str(2**64)


# ------------------------------------------------------------------------ the run and helpers

@pytest.fixture(scope="module")
def world(tmp_path_factory) -> SimpleNamespace:
    """A 1-step run trained by the CLI (its tokenizer and shards cached under cache/), and a
    copy whose weights hold a NaN and an inf (nan/)."""
    root = tmp_path_factory.mktemp("bad-inputs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BASEGPT_CACHE", str(root / "cache"))
        assert main(["train", *TINY, "--max-steps", "1", "--out", str(root / "run")]) == 0
    nan = root / "nan"
    shutil.copytree(root / "run", nan)
    weights = load_file(nan / "model.safetensors")
    weights["blocks.1.ff.up.weight"][0, 0] = math.nan
    weights["tok_emb.weight"][3, 1] = math.inf
    save_file(weights, nan / "model.safetensors", metadata={"format": "pt"})
    loaded = load_run(root / "run")
    return SimpleNamespace(root=root, run=root / "run", nan=nan, cache=root / "cache",
                           model=loaded.model, tok=loaded.tokenizer)


def snapshot(*roots: Path) -> dict[str, tuple[int, int] | None]:
    """Every file (size, mtime) and folder under roots: any write, creation or removal shows."""
    seen: dict[str, tuple[int, int] | None] = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            seen[folder] = None
            for name in files:
                st = os.stat(os.path.join(folder, name))
                seen[os.path.join(folder, name)] = (st.st_size, st.st_mtime_ns)
    return seen


def run_main(args: list[str]) -> int:
    try:
        return main(args)
    except SystemExit as exit:             # argparse's usage errors exit from inside main
        return exit.code


def write(name: str, content: str | bytes) -> Callable[[Path, Any], None]:
    """A setup that writes tmp/name."""
    def setup(tmp: Path, world: Any) -> None:
        path = tmp / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return setup


def damaged(change: Callable[[Path], None]) -> Callable[[Path, Any], None]:
    """A setup that copies the run to tmp/bad and damages the copy."""
    def setup(tmp: Path, world: Any) -> None:
        shutil.copytree(world.run, tmp / "bad")
        change(tmp / "bad")
    return setup


def edit_config(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        config = json.loads((run / "config.json").read_text())
        change(config)
        (run / "config.json").write_text(json.dumps(config))
    return edit


def without_model(config: dict) -> None:
    del config["model"]


def put(path: str, content: str | bytes) -> Callable[[Path], None]:
    def change(run: Path) -> None:
        (run / path).write_bytes(content if isinstance(content, bytes) else content.encode())
    return change


def other_tokenizer(run: Path) -> None:
    Tokenizer(vocab_size=300).save(run / "tokenizer.json")      # untrained: another hash


# ------------------------------------------------------------------------ CLI cases

@dataclass(frozen=True)
class Cli:
    args: str                   # split on spaces; {run}, {nan}, {bad}, {tmp} are filled in
    words: tuple[str, ...]      # each must be in the error line
    setup: Callable[[Path, Any], None] | None = None
    logs: int = 0               # lines of progress logged to stderr before the error


def state_without(key: str) -> Callable[[Path], None]:
    """Drop `key` from the newest checkpoint's train_state.json."""
    def change(run: Path) -> None:
        path = max((run / "checkpoints").iterdir()) / "train_state.json"
        state = json.loads(path.read_text())
        del state[key]
        path.write_text(json.dumps(state))
    return change


CLI_CASES = {
    # a damaged run: the file is named, and nothing is written before the error
    "metrics-not-utf8-plot": Cli("plot {bad}", ("metrics.jsonl is not UTF-8", "restore it"),
                                 damaged(put("metrics.jsonl", b'{"step": 1, "x": "\xff"}\n'))),
    "metrics-not-utf8-resume": Cli("train --resume {bad} --max-steps 3 --quiet",
                                   ("metrics.jsonl is not UTF-8",),
                                   damaged(put("metrics.jsonl", b"\xff\xfe\n"))),
    "run-json-not-utf8-resume": Cli("train --resume {bad} --max-steps 3 --quiet",
                                    ("run.json is not UTF-8", "restore it"),
                                    damaged(put("run.json", b"[\xff]"))),
    "run-json-not-a-list": Cli("train --resume {bad} --max-steps 3 --quiet",
                               ("run.json is not a list of run entries",),
                               damaged(put("run.json", "{}"))),
    "train-state-without-rng": Cli("train --resume {bad} --max-steps 3 --quiet",
                                   ("train_state.json has no 'rng' section",
                                    "none is complete", "--overwrite"),
                                   damaged(state_without("rng"))),
    "train-state-without-progress": Cli("train --resume {bad} --max-steps 3 --quiet",
                                        ("has no 'progress' section",),
                                        damaged(state_without("progress"))),
    # --config files: the file is named
    "config-is-a-list": Cli("config show --config {tmp}/list.json",
                            ("list.json holds a list", "object of sections"), write("list.json", "[1, 2]")),
    "config-not-utf8": Cli("train --config {tmp}/latin.json --out {tmp}/out",
                           ("latin.json is not UTF-8", "save the JSON config as UTF-8"),
                           write("latin.json", b'{"train": {"lr": "caf\xe9"}}')),
    "config-missing": Cli("config show --config {tmp}/nope.json", ("nope.json: no such config file",)),
    "config-bad-json": Cli("config show --config {tmp}/bad.json", ("bad.json is not a valid JSON",),
                           write("bad.json", '{"model": ')),
    "config-unknown-section": Cli("config show --config {tmp}/c.json", ("'modle'", "did you mean 'model'"),
                                  write("c.json", '{"modle": {}}')),
    "config-section-not-a-table": Cli("config show --config {tmp}/c.json", ("c.json: section 'model' holds a list",),
                                      write("c.json", '{"model": [1]}')),
    "config-unknown-key": Cli("config show --config {tmp}/c.json", ("'n_embd'", "did you mean 'n_embed'"),
                              write("c.json", '{"model": {"n_embd": 8}}')),
    "config-wrong-type": Cli("config show --config {tmp}/c.json", ("lr='0.003'", "a number"),
                             write("c.json", '{"train": {"lr": "0.003"}}')),
    # numbers out of range: the field and its range
    "seed-beyond-64-bits": Cli(f"config show --seed {BIG_SEED}",
                               ("seed=18446744073709551616", "0..9223372036854775807")),
    "seed-beyond-64-bits-train": Cli(f"train --seed {BIG_SEED} --out {{tmp}}/out",
                                     ("seed=18446744073709551616", "0..9223372036854775807")),
    "beta1-above-1": Cli("config show --beta1 1.5", ("beta1=1.5", "[0, 1)")),
    "beta2-is-1": Cli("config show --beta2 1", ("beta2=1", "[0, 1)")),
    "weight-decay-nan": Cli("config show --optimizer adamw --weight-decay nan",
                            ("weight_decay=nan", "finite number >= 0")),
    "grad-clip-negative": Cli("config show --grad-clip -1", ("grad_clip=-1", ">= 0")),
    "lr-inf": Cli("config show --lr inf", ("lr must be positive and finite", "inf")),
    "max-minutes-inf": Cli("config show --max-minutes inf", ("max_minutes", "finite positive")),
    "peak-tflops-zero": Cli("config show --peak-tflops 0", ("peak_tflops=0", "finite positive")),
    "dropout-1": Cli("config show --embed-dropout 1", ("embed_dropout=1.0", "[0, 1)")),
    "norm-eps-nan": Cli("config show --norm-eps nan", ("norm_eps=nan", "finite positive")),
    "init-std-inf": Cli("config show --init-std inf", ("init_std=inf", "finite positive")),
    "n-block-zero": Cli("config show --n-block 0", ("n_block=0", "positive integer")),
    "n-kv-head-not-a-divisor": Cli("config show --n-kv-head 3", ("n_kv_head=3", "divisible")),
    "val-fraction-1": Cli("config show --val-fraction 1", ("val_fraction", "(0, 1)")),
    # unknown names and flag values
    "unknown-preset": Cli("train --preset nope", ("invalid choice: 'nope'", "laptop")),
    "unknown-positional": Cli("config show --positional rotary", ("positional='rotary'", "'rope'")),
    "unknown-optimizer": Cli("config show --optimizer sgd", ("optimizer='sgd'", "'adamw'")),
    "unknown-device": Cli("train --device gpu --out {tmp}/out", ("device='gpu'", "did you mean 'cuda'")),
    "unknown-flag": Cli("train --n-embd 8", ("--n-embd", "did you mean --n-embed?")),
    "not-an-int": Cli("train --n-block two", ("--n-block", "invalid int value: 'two'")),
    # memory far beyond the machine: refused before the tokenizer and data are made
    "n-context-1e8": Cli("train --n-context 100000000 --out {tmp}/out",
                         ("training this model needs about", "TiB", "lower", "n_context (--n-context)")),
    # train: conflicting or missing runs
    "resume-missing-run": Cli("train --resume {tmp}/nope", ("nope: no such run directory",)),
    "resume-with-model-flags": Cli("train --resume {run} --n-embed 64", ("--resume continues a run",)),
    "init-from-without-out": Cli("train --init-from {run}", ("--init-from starts a new run", "--out")),
    "init-from-and-resume": Cli("train --init-from {run} --resume {run}", ("give one of them",)),
    # eval: a zero is an error like a negative, not "the default"
    "eval-max-tokens-0": Cli("eval {run} --max-tokens 0", ("max_tokens must be a positive integer, got 0",)),
    "eval-batch-size-0": Cli("eval {run} --batch-size 0", ("batch_size must be a positive integer, got 0",)),
    "eval-batch-size-negative": Cli("eval {run} --batch-size -5", ("batch_size", "got -5")),
    "eval-text-too-short": Cli("eval {run} --text a", ("is 1 token(s) long", "at least 2")),
    "eval-text-and-files": Cli("eval {run} x.txt --text abc", ("not both",)),
    "eval-missing-file": Cli("eval {run} {tmp}/nope.txt", ("nope.txt",)),
    # weights that are not finite: say so, name the tensors and the file
    "eval-nan-weights": Cli("eval {nan} --text 'def f(x): return x'",
                            ("NaN or inf", "blocks.1.ff.up.weight", "tok_emb.weight", "model.safetensors")),
    "generate-nan-weights": Cli("generate {nan} --prompt def --max-new-tokens 3 --seed 0",
                                ("NaN or inf", "blocks.1.ff.up.weight", "model.safetensors")),
    "generate-nan-weights-greedy": Cli("generate {nan} --prompt def --max-new-tokens 3 --temperature 0",
                                       ("NaN or inf", "blocks.1.ff.up.weight", "model.safetensors")),
    # missing and damaged run directories: the file is named
    "generate-missing-run": Cli("generate {tmp}/nope", ("nope: no such run directory",)),
    "info-missing-run": Cli("info {tmp}/nope", ("nope: no such run directory",)),
    "info-not-a-run": Cli("info {tmp}", ("is not a basegpt run directory", "config.json")),
    "plot-missing-run": Cli("plot {tmp}/nope", ("nope: no such run directory",)),
    "corrupt-safetensors": Cli("generate {bad} --prompt x", ("model.safetensors is not a readable "
                                                             "safetensors file",),
                               damaged(put("model.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}"))),
    "wrong-tokenizer": Cli("generate {bad} --prompt x", ("tokenizer.json", "is not the tokenizer this "
                                                         "model was trained with"),
                           damaged(other_tokenizer)),
    "tokenizer-not-json": Cli("info {bad}", ("tokenizer.json is not valid JSON",),
                              damaged(put("tokenizer.json", "{"))),
    "config-json-not-json": Cli("generate {bad}", ("config.json is not valid JSON",),
                                damaged(put("config.json", "{"))),
    "config-json-no-model-generate": Cli("generate {bad} --prompt x", ("config.json", '"model"', "has none"),
                                         damaged(edit_config(without_model))),
    "config-json-no-model-info": Cli("info {bad}", ("config.json", '"model"', "has none"),
                                     damaged(edit_config(without_model))),
    "config-json-no-model-eval": Cli("eval {bad}", ("config.json", '"model"', "has none"),
                                     damaged(edit_config(without_model))),
    "config-json-no-model-attention": Cli("attention {bad} --prompt x --out {tmp}/a.png",
                                          ("config.json", '"model"'), damaged(edit_config(without_model))),
    "config-json-no-model-resume": Cli("train --resume {bad}", ("config.json", '"model"', "has none"),
                                       damaged(edit_config(without_model))),
    "config-json-no-model-init-from": Cli("train --init-from {bad} --out {tmp}/new",
                                          ("config.json", '"model"', "has none"),
                                          damaged(edit_config(without_model))),
    "config-json-model-is-a-list": Cli("generate {bad}", ("config.json", '"model"', "has [1, 2]"),
                                       damaged(edit_config(lambda c: c.update(model=[1, 2])))),
    "config-json-model-bad-key": Cli("info {bad}", ("config.json: bad model config", "'n_embd'"),
                                     damaged(edit_config(lambda c: c["model"].update(n_embd=8)))),
    "config-json-spec-is-a-list": Cli("train --resume {bad}", ("config.json", "'spec'", "list"),
                                      damaged(edit_config(lambda c: c.update(spec=[1])))),
    # generate and attention arguments
    "generate-seed-beyond-64-bits": Cli(f"generate {{run}} --prompt x --seed {2**70}",
                                        ("seed=1180591620717411303424", "0..9223372036854775807")),
    "generate-num-samples-0": Cli("generate {run} --num-samples 0", ("--num-samples=0", ">= 1")),
    "generate-negative-temperature": Cli("generate {run} --temperature -1", ("temperature=-1.0",)),
    "generate-top-p-0": Cli("generate {run} --top-p 0", ("top_p=0.0", "(0, 1]")),
    "generate-prompt-and-file": Cli("generate {run} --prompt x --prompt-file p.txt", ("not both",)),
    "generate-prompt-file-missing": Cli("generate {run} --prompt-file {tmp}/p.txt", ("p.txt: no such file",)),
    "generate-prompt-file-not-utf8": Cli("generate {run} --prompt-file {tmp}/p.txt",
                                         ("p.txt is not valid UTF-8",), write("p.txt", b"caf\xe9")),
    "attention-prompt-too-long": Cli("attention {run} --prompt " + "abcdefgh" * 10 + " --out {tmp}/a.png",
                                     ("the prompt is", "n_context is 16")),
    "attention-layer-out-of-range": Cli("attention {run} --prompt abc --layer 9 --out {tmp}/a.png",
                                        ("--layer 9 does not exist", "2 layer(s)")),
    # tokenizer, prepare, export, import
    "decode-id-out-of-range": Cli("tokenizer decode --tokenizer {run}/tokenizer.json 99999",
                                  ("token id 99999 is out of range",)),
    "encode-no-text": Cli("tokenizer encode --tokenizer {run}/tokenizer.json", ("give either a TEXT",)),
    "tokenizer-missing": Cli("tokenizer encode --tokenizer {tmp}/nope.json hi",
                             ("nope.json: no such tokenizer file",)),
    "tokenizer-vocab-too-small": Cli("tokenizer train --vocab-size 10 --out {tmp}/t.json",
                                     ("vocab_size=10 is too small", "at least 258")),
    "tokenizer-train-empty-file": Cli("tokenizer train {tmp}/empty.txt --out {tmp}/t.json",
                                      ("no text to train on",), write("empty.txt", ""), logs=1),
    "prepare-val-fraction": Cli("prepare --tokenizer {run}/tokenizer.json --out {tmp}/shards "
                                "--val-fraction 1.5", ("val_fraction", "[0, 1)")),
    "export-not-gpt2": Cli("export {run} --format hf {tmp}/hf",
                           ("cannot be exported to GPT-2 format", "positional='rope'")),
    "import-missing": Cli("import hf {tmp}/nope {tmp}/imported", ("nope: no such directory",)),
}


@pytest.mark.parametrize("case", CLI_CASES.values(), ids=CLI_CASES.keys())
def test_cli_bad_input_is_one_line_exit_2_and_changes_nothing(case, world, tmp_path, monkeypatch,
                                                                capsys):
    monkeypatch.setenv("BASEGPT_CACHE", str(world.cache))
    monkeypatch.chdir(tmp_path)
    if case.setup is not None:
        case.setup(tmp_path, world)
    names = dict(run=world.run, nan=world.nan, bad=tmp_path / "bad", tmp=tmp_path)
    args = _split(case.args, names)
    before = snapshot(tmp_path, world.root)
    code = run_main(args)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, f"exit {code}, wanted 2; stderr:\n{err[-2000:]}"
    assert "Traceback" not in err, err
    assert len(lines) == 1 + case.logs and ": error: " in lines[-1], \
        f"wanted one error line{f' after {case.logs} of log' if case.logs else ''}, got:\n{err}"
    assert ": error: " not in "".join(lines[:-1]), err
    for word in case.words:
        assert word in lines[-1], f"{word!r} not in: {lines[-1]}"
    assert snapshot(tmp_path, world.root) == before, "a refused command changed files on disk"


def _split(args: str, names: dict[str, Path]) -> list[str]:
    """Split on spaces, keeping a 'quoted text' as one argument; fill in the paths."""
    out, quoted = [], None
    for word in args.split(" "):
        if quoted is not None:
            quoted.append(word)
            if word.endswith("'"):
                out.append(" ".join(quoted)[1:-1])
                quoted = None
        elif word.startswith("'") and not word.endswith("'"):
            quoted = [word]
        else:
            out.append(word.format(**names))
    return out


# A real process: the same one line, and no traceback reaches the user.
SUBPROCESS_CASES = ["config-is-a-list", "config-not-utf8", "generate-nan-weights"]


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_a_real_process_prints_one_line_and_no_traceback(name, world, tmp_path):
    case = CLI_CASES[name]
    if case.setup is not None:
        case.setup(tmp_path, world)
    args = _split(case.args, dict(run=world.run, nan=world.nan, bad=tmp_path / "bad", tmp=tmp_path))
    before = snapshot(tmp_path, world.root)
    env = {**os.environ, "BASEGPT_CACHE": str(world.cache), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "basegpt", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, f"exit {proc.returncode}; stderr:\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr[-3000:]
    assert all(word in lines[0] for word in case.words), lines[0]
    assert snapshot(tmp_path, world.root) == before, "a refused command changed files on disk"


# ------------------------------------------------------------------------ API cases

@dataclass(frozen=True)
class Api:
    call: Callable[[Any], Any]       # given the world (run, model, tok, ...) and tmp
    error: type[Exception]
    words: tuple[str, ...]


def _damaged_run(w: Any, change: Callable[[Path], None]) -> Path:
    bad = w.tmp / "bad"
    shutil.copytree(w.run, bad)
    change(bad)
    return bad


def _config_file(w: Any, content: str | bytes) -> Path:
    (w.tmp / "c.json").write_bytes(content if isinstance(content, bytes) else content.encode())
    return w.tmp / "c.json"


API_CASES = {
    # the model's forward: ids must be a (B, T) integer tensor of valid ids
    "model-list": Api(lambda w: w.model([[1, 2]]), TypeError, ("ids must be a torch.Tensor", "got list")),
    "model-float-ids": Api(lambda w: w.model(torch.tensor([[1.0, 2.0]])), TypeError,
                           ("ids must be integer token ids", "torch.float32")),
    "model-1d-ids": Api(lambda w: w.model(torch.tensor([1, 2])), ValueError, ("(batch, time)", "(2,)")),
    "model-id-out-of-range": Api(lambda w: w.model(torch.tensor([[1, 999]])), ValueError,
                                 ("token id 999 is out of range", "vocab_size=300")),
    "model-too-long": Api(lambda w: w.model(torch.zeros(1, 17, dtype=torch.long)), ValueError,
                          ("go past n_context=16",)),
    "model-config-type": Api(lambda w: B2lM(42), TypeError, ("config must be a ModelConfig", "int")),
    "model-unknown-kwarg": Api(lambda w: B2lM(n_embd=8), ValueError, ("'n_embd'", "did you mean 'n_embed'")),
    "model-beyond-memory": Api(lambda w: B2lM(ModelConfig(n_context=10**9, positional="learned")),
                               ValueError, ("needs about 476.8 GiB", "16.0 GiB available",
                                            "n_context (--n-context)")),
    # the dataset
    "dataset-texts-none": Api(lambda w: SlidingWindowDataset(w.tok, 16, texts=None), TypeError,
                              ("texts must be a list of strings", "NoneType")),
    "dataset-tokenizer-none": Api(lambda w: SlidingWindowDataset(None, 16, texts=["abc"]), TypeError,
                                  ("tokenizer must be a basegpt Tokenizer", "NoneType")),
    "dataset-texts-str": Api(lambda w: SlidingWindowDataset(w.tok, 16, texts="abc"), TypeError,
                             ("one str", "texts=[text]")),
    "dataset-texts-bytes": Api(lambda w: SlidingWindowDataset(w.tok, 16, texts=b"abc"), TypeError,
                               ("texts must be a list of strings", "bytes")),
    "dataset-empty-text": Api(lambda w: SlidingWindowDataset(w.tok, 16, texts=[""]), ValueError,
                              ("the corpus is empty",)),
    "dataset-n-context-0": Api(lambda w: SlidingWindowDataset(w.tok, 0, texts=["abc"]), ValueError,
                               ("n_context must be a positive integer, got 0",)),
    # generation
    "generate-prompt-none": Api(lambda w: generate(w.model, w.tok, None), TypeError,
                                ("prompt must be a str or a list of str", "NoneType")),
    "generate-prompt-bytes": Api(lambda w: generate(w.model, w.tok, b"def "), TypeError,
                                 ("prompt must be a str", "bytes", "decode")),
    "generate-no-prompts": Api(lambda w: generate(w.model, w.tok, []), ValueError, ("no prompts given",)),
    "generate-seed-too-big": Api(lambda w: generate(w.model, w.tok, "x", seed=2**64), ValueError,
                                 ("seed=18446744073709551616", "0..9223372036854775807")),
    "generate-seed-float": Api(lambda w: generate(w.model, w.tok, "x", seed=1.5), TypeError,
                               ("seed must be an int or None", "float")),
    "generate-negative-max-new-tokens": Api(lambda w: generate(w.model, w.tok, "x", max_new_tokens=-1),
                                            ValueError, ("max_new_tokens=-1",)),
    "generate-ids-out-of-range": Api(lambda w: generate_ids(w.model, [[5, 300]]), ValueError,
                                     ("token id 300 out of range", "0..299")),
    "generate-prompt-too-long-strict": Api(
        lambda w: generate(w.model, w.tok, "abcdefgh" * 10, strict_context=True), ValueError,
        ("n_context is 16", "strict_context=False")),
    "generate-nan-weights": Api(lambda w: api_load_run(w.nan).generate("def ", max_new_tokens=2, seed=0),
                                ValueError, ("NaN or inf", "blocks.1.ff.up.weight", "model.safetensors")),
    "score-empty-text": Api(lambda w: score(w.model, w.tok, ""), ValueError, ("non-empty str",)),
    # the tokenizer
    "tokenizer-vocab-size-str": Api(lambda w: Tokenizer(vocab_size="500"), TypeError,
                                    ("vocab_size must be an int", "got str '500'")),
    "tokenizer-vocab-size-float": Api(lambda w: Tokenizer(vocab_size=300.5), TypeError,
                                      ("vocab_size must be an int", "got float 300.5")),
    "tokenizer-vocab-size-small": Api(lambda w: Tokenizer(vocab_size=100), ValueError,
                                      ("vocab_size=100 is too small", "at least 258")),
    "tokenizer-train-bytes": Api(lambda w: Tokenizer(vocab_size=300).train(b"abc abc", progress=False),
                                 TypeError, ("texts must be a str, a path or a list", "bytes", "decode")),
    "tokenizer-train-none": Api(lambda w: Tokenizer(vocab_size=300).train(None, progress=False),
                                TypeError, ("texts must be a str", "NoneType")),
    "tokenizer-train-empty": Api(lambda w: Tokenizer(vocab_size=300).train("", progress=False),
                                 ValueError, ("no text to train on",)),
    "tokenizer-encode-bytes": Api(lambda w: w.tok.encode(b"abc"), TypeError, ("encode expects str", "bytes")),
    "tokenizer-decode-out-of-range": Api(lambda w: w.tok.decode([5, 99999]), ValueError,
                                         ("token id 99999 is out of range",)),
    "tokenizer-load-missing": Api(lambda w: Tokenizer.load(w.tmp / "nope.json"), FileNotFoundError,
                                  ("nope.json: no such tokenizer file",)),
    # settings
    "train-config-seed": Api(lambda w: TrainConfig(seed=2**64), ValueError, ("seed=", "0..9223372036854775807")),
    "train-config-beta1": Api(lambda w: TrainConfig(beta1=1.5), ValueError, ("beta1=1.5", "[0, 1)")),
    "train-config-beta2-negative": Api(lambda w: TrainConfig(beta2=-0.1), ValueError, ("beta2=-0.1", "[0, 1)")),
    "train-config-weight-decay-nan": Api(lambda w: TrainConfig(optimizer="adamw", weight_decay=math.nan),
                                         ValueError, ("weight_decay=nan",)),
    "train-config-grad-clip-inf": Api(lambda w: TrainConfig(grad_clip=math.inf), ValueError, ("grad_clip=inf",)),
    "train-config-epochs-inf": Api(lambda w: TrainConfig(epochs=math.inf), ValueError, ("epochs", "finite")),
    "train-config-lr-string": Api(lambda w: TrainConfig(lr="0.1"), ValueError, ("lr='0.1'", "a number")),
    "model-config-rope-base-nan": Api(lambda w: ModelConfig(rope_base=math.nan), ValueError,
                                      ("rope_base=nan", "finite positive")),
    "model-config-odd-rope": Api(lambda w: ModelConfig(positional="rope", n_k=15), ValueError,
                                 ("n_k=15", "even")),
    "unknown-preset": Api(lambda w: load_preset("lapotp"), ValueError, ("unknown preset 'lapotp'",
                                                                         "did you mean 'laptop'")),
    "config-file-list": Api(lambda w: load_config_file(_config_file(w, "[1]")), ValueError,
                            ("c.json holds a list",)),
    "config-file-not-utf8": Api(lambda w: load_config_file(_config_file(w, b"\xff")), ValueError,
                                ("c.json is not UTF-8",)),
    "merge-specs-list": Api(lambda w: merge_specs([1]), ValueError, ("a spec must be a dict", "list")),
    # config.json without a model: every reader names the file
    "read-config-no-model": Api(lambda w: read_config(_damaged_run(w, edit_config(without_model))),
                                ValueError, ("config.json", '"model"', "has none")),
    "load-run-model-list": Api(lambda w: load_run(_damaged_run(w, edit_config(
        lambda c: c.update(model=[1])))), ValueError, ("config.json", '"model"', "has [1]")),
    "init-from-no-model": Api(lambda w: init_from_run(w.model, _damaged_run(w, edit_config(without_model))),
                              ValueError, ("config.json", '"model"')),
    "read-spec-no-model": Api(lambda w: read_spec(_damaged_run(w, edit_config(without_model))),
                              ValueError, ("config.json", '"model"')),
    "resume-check-no-model": Api(lambda w: check_same_run(_damaged_run(w, edit_config(without_model)),
                                                          w.model, None),
                                 ValueError, ("config.json", '"model"')),
    "load-run-missing": Api(lambda w: load_run(w.tmp / "nope"), FileNotFoundError,
                            ("nope: no such run directory",)),
}


@pytest.mark.parametrize("case", API_CASES.values(), ids=API_CASES.keys())
def test_api_bad_input_raises_a_clear_error(case, world, tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda device: 16 * GiB)
    w = SimpleNamespace(**vars(world), tmp=tmp_path)
    with pytest.raises(case.error) as info:
        case.call(w)
    assert type(info.value) is case.error, f"{type(info.value).__name__}: {info.value}"
    for word in case.words:
        assert word in str(info.value), f"{word!r} not in: {info.value}"


def test_the_battery_is_large_enough():
    assert len(CLI_CASES) + len(API_CASES) >= 60


# ------------------------------------------------------------------------ not errors

def test_info_still_reads_a_run_with_non_finite_weights(world, capsys):
    """load_run does not refuse such a run: `basegpt info` shows what it is."""
    assert main(["info", str(world.nan)]) == 0
    assert "parameters:" in capsys.readouterr().out


def test_a_huge_max_new_tokens_is_no_error(world, capsys):
    """Nothing is sized by --max-new-tokens: 10**12 that stop at the first character is fine."""
    first = generate(world.model, world.tok, "def ", max_new_tokens=8, temperature=0)[0]
    assert first not in ("", "\ufffd", "\\"), f"pick another prompt: {first!r}"
    code = main(["generate", str(world.run), "--prompt", "def ", "--max-new-tokens",
                 "1000000000000", "--temperature", "0", "--stop", first, "--device", "cpu"])
    assert code == 0 and capsys.readouterr().out == "def \n"
