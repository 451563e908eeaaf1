"""`basegpt train`'s settings and guard rails, in process (issue 8): the shipped presets, the
no-argument main job, typed config sections, the docs' option tables, output paths that are
files, a missing matplotlib, and a resume whose budget is already used up."""

from __future__ import annotations

import ast
import json
import re
import sys
from dataclasses import MISSING, fields
from pathlib import Path

import pytest
import torch

from basegpt import recipe
from basegpt.cli import main
from basegpt.config import DataConfig, ModelConfig, TrainConfig
from basegpt.model import B2lM
from basegpt.recipe import saved_progress

DOCS = Path(__file__).parent.parent / "docs"     # model.md and training.md hold the option tables
TINY = ["--n-block", "2", "--n-embed", "32", "--n-head", "2", "--n-k", "16", "--n-v", "16",
        "--n-ff", "64", "--n-context", "32", "--batch-size", "4", "--vocab-size", "300",
        "--max-bytes", "200000", "--eval-tokens", "2048", "--device", "cpu", "--quiet"]


def configs(preset: str) -> tuple[ModelConfig, TrainConfig, DataConfig]:
    return recipe.check_spec(recipe.resolve_spec(preset))


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, f"one line on stderr, got: {err}"
    return err[0]


# ------------------------------------------------------------------------ presets

def test_seed_preset_is_the_original_design():
    model, train, data = configs("seed")
    got = {name: getattr(model, name) for name in (
        "n_embed", "n_block", "n_head", "n_k", "n_v", "n_ff", "n_context", "norm_position",
        "positional", "activation")}
    assert got == {"n_embed": 128, "n_block": 4, "n_head": 4, "n_k": 32, "n_v": 32, "n_ff": 256,
                   "n_context": 64, "norm_position": "post", "positional": "sinusoidal",
                   "activation": "relu"}, got
    assert (model.norm, data.vocab_size, train.optimizer) == ("layernorm", 500, "adam"), \
        "LayerNorm, the original's vocab_size=500 and Adam"


def test_gpt2_small_preset_is_gpt2_small():
    from basegpt.interop.hf_gpt2 import gpt2_incompatibilities
    model, _, data = configs("gpt2-small")
    assert model.vocab_size == data.vocab_size == 50257, "GPT-2's vocabulary"
    assert gpt2_incompatibilities(model) == [], "exportable to Hugging Face GPT-2 as it is"
    with torch.device("meta"):                      # sizes only: no 500 MB of weights
        n = B2lM(model).num_parameters()
    assert n == 124_439_808, f"GPT-2 small has 124,439,808 parameters (tied head), got {n:,}"


def test_shakespeare_char_preset_is_byte_level_on_tinyshakespeare():
    model, train, data = configs("shakespeare-char")
    assert data.source == "shakespeare" and data.vocab_size == 258, \
        "256 bytes + 2 special tokens: no merges"
    assert (model.n_block, model.n_embed, model.n_head, model.n_context) == (6, 384, 6, 256), model
    assert model.attn_dropout == model.resid_dropout == model.embed_dropout == 0.2, model
    assert train.max_steps == 5000, train


def _train_call(argv: list[str], monkeypatch) -> dict:
    """What `basegpt train ARGV` would hand recipe.train_run (spec, out and the keyword
    arguments), captured without running anything."""
    seen = {}

    class Stop(Exception):
        pass

    def fake_train_run(spec, out, **kwargs):
        seen.update(spec=spec, out=out, **kwargs)
        raise Stop

    monkeypatch.setattr(recipe, "train_run", fake_train_run)
    with pytest.raises(Stop):
        main(["train", *argv])
    return seen


def test_train_with_no_arguments_is_the_laptop_main_job(monkeypatch, tmp_path):
    """`basegpt train` alone: the laptop preset into runs/laptop, on a stated time budget."""
    monkeypatch.chdir(tmp_path)
    seen = _train_call([], monkeypatch)
    assert seen["out"] == Path("runs/laptop") and not seen["resume"], seen
    assert seen["spec"] == recipe.resolve_spec("laptop"), "the laptop preset, nothing added"
    model, train, data = recipe.check_spec(seen["spec"])
    assert (train.max_minutes, train.max_steps, train.epochs) == (4, None, None), \
        "a bounded time budget, and only that"
    assert data.source == "stdlib" and not data.inputs, "the built-in corpus: works offline"
    assert (model.norm_position, model.n_block, model.n_embed) == ("pre", 4, 128), model
    from basegpt.train_summary import summary
    text = summary(B2lM(model.replace(vocab_size=300)), train, torch.device("cpu"),
                   torch.float32, model.n_context, 1, 1, None)
    assert "budget 4 min" in text, f"the budget is stated before training:\n{text}"


@pytest.mark.parametrize("argv, name", [
    ([], "laptop"), (["--preset", "seed"], "seed"), (["--data", "shakespeare"], "shakespeare"),
    (["--preset", "shakespeare-char"], "shakespeare-char"), (["mytext.txt"], "mytext"),
    (["mytext/"], "mytext"), (["notes/*.md", "mytext.txt"], "notes"),
])
def test_a_new_run_is_named_after_its_data_and_never_written_over(argv, name, monkeypatch,
                                                                  tmp_path):
    monkeypatch.chdir(tmp_path)
    for folder in ("mytext", "notes"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "a.md").write_text("text")
    (tmp_path / "mytext.txt").write_text("text")
    assert _train_call(argv, monkeypatch)["out"] == Path("runs", name)
    (tmp_path / "runs" / name).mkdir(parents=True)          # taken: by a run, or anything
    assert _train_call(argv, monkeypatch)["out"] == Path("runs", f"{name}-2")
    (tmp_path / "runs" / f"{name}-2").mkdir()
    assert _train_call(argv, monkeypatch)["out"] == Path("runs", f"{name}-3")
    assert _train_call([*argv, "--overwrite"], monkeypatch)["out"] == Path("runs", name), \
        "--overwrite: the run to replace"
    assert _train_call([*argv, "--out", "mine"], monkeypatch)["out"] == Path("mine")


@pytest.mark.parametrize("cls, section", [(ModelConfig, "model"), (TrainConfig, "train"),
                                          (DataConfig, "data")])
def test_every_choice_of_every_choice_flag_reaches_the_config(cls, section, monkeypatch):
    """A flag's type comes from its field's type: `--dtype bfloat16` is a name, not a float
    (a Literal of "float32", "bfloat16", ... once made it one)."""
    from typing import Literal, get_args, get_origin, get_type_hints
    hints = get_type_hints(cls)
    checked = 0
    for f in fields(cls):
        if get_origin(hints[f.name]) is not Literal:
            continue
        for choice in get_args(hints[f.name]):
            flag = "--data" if (section, f.name) == ("data", "source") else \
                "--" + f.name.replace("_", "-")
            # --weight-decay 0: the laptop preset's decay would refuse --optimizer adam
            spec = _train_call([flag, choice, "--weight-decay", "0"], monkeypatch)["spec"]
            assert spec[section][f.name] == choice, (flag, choice, spec[section])
            checked += 1
    assert checked >= (2 if section != "data" else 0), f"{cls.__name__} has Literal fields"


def test_number_flags_parse_as_numbers(monkeypatch):
    spec = _train_call(["--lr", "0.002", "--max-steps", "7", "--n-kv-head", "2", "--no-bias"],
                       monkeypatch)["spec"]
    assert (spec["train"]["lr"], spec["train"]["max_steps"]) == (0.002, 7), spec["train"]
    assert (spec["model"]["n_kv_head"], spec["model"]["bias"]) == (2, False), spec["model"]


def test_laptop_description_claims_no_benchmark():
    description = recipe.load_preset("laptop")["description"]
    assert "BENCHMARKS" not in description, "BENCHMARKS.md does not measure this preset"


# ------------------------------------------------------------------------ typed sections

@pytest.mark.parametrize("name, text, expected", [
    ("c.json", json.dumps({"train": {"lr": "0.003"}}), "lr='0.003': must be a number, not str"),
    ("c.toml", '[train]\nlr = "x"\n', "lr='x': must be a number, not str"),
    ("c.json", json.dumps({"data": {"vocab_size": "1024"}}),
     "vocab_size='1024': must be an integer, not str"),
    ("c.json", json.dumps({"train": {"max_steps": 2.5}}),
     "max_steps=2.5: must be an integer or None, not float"),
    ("c.json", json.dumps({"data": {"inputs": "notes/"}}),
     "inputs='notes/': must be a list of strings, not str"),
])
def test_a_wrongly_typed_config_value_names_field_value_and_type(tmp_path, capsys, name, text,
                                                                 expected):
    (tmp_path / name).write_text(text)
    assert main(["config", "show", "--config", str(tmp_path / name)]) == 2, "a user error"
    line = one_error_line(capsys)
    assert expected in line, line
    assert "not supported between" not in line, "not a comparison failing later"


def test_train_and_data_configs_check_types_themselves():
    with pytest.raises(ValueError, match="epochs=True: must be a number or None, not bool"):
        TrainConfig(epochs=True)
    with pytest.raises(ValueError, match=r"inputs=\['a', 3\]: must be a list of strings"):
        DataConfig(inputs=["a", 3])
    with pytest.raises(ValueError, match="choose one of 'adam', 'adamw'"):
        TrainConfig(optimizer="Adam")                 # a Literal still names its choices
    assert TrainConfig(max_minutes=2, lr=1).lr == 1, "an int is a number"
    assert DataConfig(inputs=["a.txt"], max_bytes=None).inputs == ("a.txt",), "JSON's list"


def test_prepare_and_train_hold_out_the_same_share_by_default(monkeypatch):
    """A folder prepared by hand splits like the shards `basegpt train` prepares itself."""
    import inspect
    from basegpt.cli import build_parser
    from basegpt.data.pipeline import prepare
    prepare_flag = build_parser().parse_args(["prepare", "--out", "x"]).val_fraction
    library = inspect.signature(prepare).parameters["val_fraction"].default
    train = recipe.check_spec(_train_call([], monkeypatch)["spec"])[2].val_fraction
    assert prepare_flag == library == train == DataConfig().val_fraction, \
        (prepare_flag, library, train)


# ------------------------------------------------------------------------ docs tables

def docs_table(header: str) -> dict[str, str]:
    """{option: default cell} of the docs/ table whose header row starts with `header`."""
    lines = [line for page in sorted(DOCS.glob("*.md"))
             for line in page.read_text(encoding="utf-8").splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        name, default = (cell.strip() for cell in line.split("|")[1:3])
        rows[name.strip("`* ").rstrip("`")] = default.strip("`")
    return rows


@pytest.mark.parametrize("cls, header", [(ModelConfig, "| option | default |"),
                                         (TrainConfig, "| train option |"),
                                         (DataConfig, "| data option |")])
def test_docs_tables_list_every_option_with_its_default(cls, header):
    rows = docs_table(header)
    for f in fields(cls):
        default = f.default if f.default is not MISSING else f.default_factory()
        assert f.name in rows, f"{cls.__name__}.{f.name} is missing from the docs' table"
        assert ast.literal_eval(rows[f.name]) == default, \
            f"docs/ give {cls.__name__}.{f.name} the default {rows[f.name]}, code {default!r}"
    extra = set(rows) - {f.name for f in fields(cls)}
    assert not extra, f"the docs' table lists options {cls.__name__} does not have: {extra}"


# ------------------------------------------------------------------------ paths and libraries

def test_train_out_that_is_a_file_fails_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BASEGPT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "afile").write_text("")
    for out in ("afile", "afile/run"):
        assert main(["train", "--out", str(tmp_path / out), *TINY]) == 2, out
        line = one_error_line(capsys)
        assert f"{tmp_path / 'afile'} is a file" in line, line
    assert not (tmp_path / "cache").exists(), "no tokenizer was trained first"


@pytest.fixture()
def metrics_run(tmp_path) -> Path:
    """A folder with the metrics.jsonl of a 2-step run: all that `basegpt plot` reads."""
    run = tmp_path / "run"
    run.mkdir()
    records = [{"step": s, "tokens": 128 * s, "train_loss": 5.0 - s, "train_bpb": 2.0 - s / 2,
                "lr": 1e-3} for s in (1, 2)]
    records[-1].update(val_loss=4.5, val_bpb=1.5)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


def test_plot_out_under_a_file_is_a_one_line_error(metrics_run, tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    assert main(["plot", str(metrics_run), "--out", str(tmp_path / "afile" / "x.png")]) == 2
    line = one_error_line(capsys)
    assert f"{tmp_path / 'afile'} is a file, but a folder must go there" in line, line
    assert main(["plot", str(metrics_run), "--out", str(tmp_path / "ok.png")]) == 0, "control"
    assert (tmp_path / "ok.png").read_bytes()[:4] == b"\x89PNG"


def test_a_missing_matplotlib_is_a_one_line_error_naming_the_fix(metrics_run, capsys,
                                                                  monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)           # import matplotlib fails
    assert main(["plot", str(metrics_run)]) == 2, "a user error, not a traceback"
    line = one_error_line(capsys)
    assert line.endswith("needs matplotlib: pip install matplotlib"), line
    from basegpt._optional import MissingDependency
    from basegpt.insight import plot_attention
    with pytest.raises(MissingDependency, match="pip install matplotlib"):
        plot_attention(["a", "b"], [torch.full((1, 2, 2), 0.5)], metrics_run / "attn.png")


def test_matplotlib_is_a_runtime_dependency():
    text = (Path(__file__).parent.parent / "pyproject.toml").read_text(encoding="utf-8")
    runtime = re.search(r"^dependencies = \[(.*?)\]", text, re.S | re.M).group(1)
    assert '"matplotlib' in runtime, "`pip install -e .` must bring matplotlib: the main " \
                                     "job writes loss.png"


# ------------------------------------------------------------------------ resume budgets

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A 2-step run of a tiny model, trained through the CLI (its tokenizer cached)."""
    root = tmp_path_factory.mktemp("budget")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BASEGPT_CACHE", str(root / "cache"))
        assert main(["train", *TINY, "--max-steps", "2", "--out", str(root / "run")]) == 0
    return root / "run"


@pytest.mark.parametrize("flags, expected", [
    (["--max-steps", "2"], "this run has used 2 of its 2-step budget; pass --max-steps > 2, "
                           "e.g. --max-steps 4"),
    (["--max-steps", "9", "--max-minutes", "1e-5"],
     "min of its 1e-05-minute budget; pass --max-minutes > "),
])
def test_resuming_a_run_whose_budget_is_used_up_is_a_user_error(tiny_run, capsys, monkeypatch,
                                                                flags, expected):
    monkeypatch.setenv("BASEGPT_CACHE", str(tiny_run.parent / "cache"))
    before = (tiny_run / "config.json").read_text()
    assert main(["train", "--resume", str(tiny_run), *flags, "--quiet"]) == 2
    line = one_error_line(capsys)
    assert expected in line and line.startswith("basegpt: error: this run has used"), line
    assert (tiny_run / "config.json").read_text() == before, "refused before anything changed"


def test_a_used_up_epochs_budget_is_a_user_error(tiny_run, capsys, monkeypatch, tmp_path):
    import shutil
    monkeypatch.setenv("BASEGPT_CACHE", str(tiny_run.parent / "cache"))
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    # A 2-step run is far past a 1e-6 epoch budget; fit alone knows the steps per epoch.
    assert main(["train", "--resume", str(run), "--max-steps", "9", "--epochs", "1e-6",
                 "--quiet"]) == 2
    line = one_error_line(capsys)
    assert "this run has used its 1e-06-epoch budget (2 steps); pass --epochs > 1e-06" in line, line
    assert saved_progress(run)["step"] == 2, "nothing was trained"


def test_eval_of_too_short_a_text_says_so_in_cli_words(tiny_run, capsys):
    assert main(["eval", str(tiny_run), "--text", ""]) == 2
    line = one_error_line(capsys)
    assert "is 0 token(s) long" in line and "give a longer text" in line, line
    assert "texts=" not in line, f"library wording: {line}"


# ------------------------------------------------------------------------ what train reads

MODEL_ONLY = TINY[:TINY.index("--vocab-size")] + TINY[TINY.index("--eval-tokens"):]
"""TINY without the text settings (--vocab-size, --max-bytes), which a prepared folder refuses."""


@pytest.fixture(scope="module")
def notes(tmp_path_factory) -> Path:
    """A folder of a user's notes: eight text files, a stray PNG and a Latin-1 file."""
    from basegpt import builtin_corpus
    folder = tmp_path_factory.mktemp("notes") / "notes"
    folder.mkdir()
    for i, text in enumerate(list(builtin_corpus(120_000))[:8]):
        (folder / f"n{i}.txt").write_text(text, encoding="utf-8")
    (folder / "diagram.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(256))
    (folder / "old.txt").write_bytes("café crème\n".encode("latin-1"))
    return folder


def test_prepare_skips_what_is_not_text_naming_each_file(notes, tmp_path, capsys):
    assert main(["tokenizer", "train", str(notes), "--vocab-size", "300", "--out",
                 str(tmp_path / "tok.json"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"basegpt: warning: skipped {notes / 'diagram.png'}: a binary file" in err, err
    assert main(["prepare", str(notes), "--tokenizer", str(tmp_path / "tok.json"), "--out",
                 str(tmp_path / "shards"), "--workers", "1", "--quiet"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 2, f"one line per skipped file: {warnings}"
    binary, latin = sorted(warnings)
    assert binary == f"basegpt: warning: skipped {notes / 'diagram.png'}: a binary file (a NUL " \
                     "byte at byte 8)", binary
    assert latin.startswith(f"basegpt: warning: skipped {notes / 'old.txt'}: not valid UTF-8") \
        and "iconv -f latin1 -t utf-8" in latin, latin
    meta = json.loads((tmp_path / "shards" / "meta.json").read_text())
    assert sum(meta["documents"].values()) == 8, f"the eight text files: {meta['documents']}"


@pytest.mark.slow                 # trains, evaluates, plots and samples: ~5 s on a busy CPU
def test_train_on_a_prepared_folder_uses_its_shards_and_tokenizer(notes, tmp_path, capsys,
                                                                  monkeypatch):
    """`basegpt prepare` then `basegpt train DIR`: no tokenizer is trained and nothing is
    tokenized again; the run's tokenizer is the folder's."""
    from basegpt import Tokenizer
    monkeypatch.setenv("BASEGPT_CACHE", str(tmp_path / "cache"))
    shards = tmp_path / "shards"
    tokenizer = Tokenizer(vocab_size=260).train(notes / "n0.txt", progress=False)
    tokenizer.save(tmp_path / "tok.json")
    assert main(["prepare", str(notes), "--tokenizer", str(tmp_path / "tok.json"), "--out",
                 str(shards), "--workers", "1", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["train", str(shards), *MODEL_ONLY, "--max-steps", "2",
                 "--out", str(tmp_path / "run")]) == 0, capsys.readouterr().err
    assert "not valid UTF-8" not in capsys.readouterr().err
    from basegpt.checkpoint import load_run
    run = load_run(tmp_path / "run")
    assert run.tokenizer.hash == tokenizer.hash and run.model.config.vocab_size == 260, \
        "the folder's tokenizer, not one trained on the shards' bytes"
    assert not (tmp_path / "cache").exists(), "no tokenizer trained, nothing tokenized again"
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert records[-1]["step"] == 2 and "val_loss" in records[-1], records[-1]


def test_a_text_setting_for_a_prepared_folder_is_refused(notes, tmp_path, capsys, monkeypatch):
    from basegpt import Tokenizer
    monkeypatch.setenv("BASEGPT_CACHE", str(tmp_path / "cache"))
    Tokenizer(vocab_size=258).save(tmp_path / "tok.json")
    assert main(["prepare", str(notes / "n0.txt"), str(notes / "n1.txt"), "--tokenizer",
                 str(tmp_path / "tok.json"), "--out", str(tmp_path / "shards"), "--quiet"]) == 0
    capsys.readouterr()
    for flags, named in ((["--val-fraction", "0.2"], "data.val_fraction (--val-fraction)"),
                         (["--vocab-size", "512"], "data.vocab_size (--vocab-size)")):
        assert main(["train", str(tmp_path / "shards"), *flags, "--out", str(tmp_path / "r")]) == 2
        line = one_error_line(capsys)
        assert f"{tmp_path / 'shards'} is already tokenized (258-token vocabulary) and split " \
               f"(val_fraction 0.05) by `basegpt prepare`, so {named} would change nothing" \
               in line, line
    assert main(["train", str(tmp_path / "shards"), str(notes / "n2.txt"),
                 "--out", str(tmp_path / "r")]) == 2
    assert "give it as the only input" in one_error_line(capsys)
    assert not (tmp_path / "r").exists() and not (tmp_path / "cache").exists(), "refused first"


# ------------------------------------------------------------------------ the parser

def test_an_unknown_flag_suggests_the_nearest(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--n-embd", "32"])
    assert exit_.value.code == 2, "a usage error"
    line = one_error_line(capsys)
    assert "basegpt train: error: unrecognized arguments: --n-embd" in line, line
    assert "did you mean --n-embed?" in line, line
    with pytest.raises(SystemExit):
        main(["tokenizer", "train", "--bogus"])
    line = one_error_line(capsys)
    assert "--bogus" in line and "did you mean" not in line, f"nothing near --bogus: {line}"


@pytest.mark.parametrize("argv", [["train"], ["config", "show"]])
def test_help_shows_the_named_presets_values(argv, cli_help, capsys):
    """`--preset seed --help` shows what that command would use: the seed preset's values."""
    seed = recipe.load_preset("seed")
    for args in ([*argv, "--preset", "seed"], [*argv, "--preset=seed"]):
        entries = cli_help(args)
        for section in ("model", "train", "data"):
            for name, value in seed[section].items():
                flag = "--" + name.replace("_", "-")
                assert f"(default {value})" in entries[flag], f"{args}: {entries[flag]}"
    with pytest.raises(SystemExit):
        main([*argv, "--preset", "seed", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "The defaults shown are the seed preset's (--preset seed; without it, laptop)" \
        in text, text
    assert "model settings (override preset and --config; defaults: the seed preset's)" in text


@pytest.mark.parametrize("argv", [["train"], ["config", "show"]])
def test_help_shows_the_default_presets_values_and_every_choice(argv, cli_help, capsys):
    from typing import Literal, get_args, get_origin, get_type_hints
    entries = cli_help(argv)
    laptop = recipe.load_preset(recipe.DEFAULT_PRESET)
    differ = 0
    for section, cls in (("model", ModelConfig), ("train", TrainConfig), ("data", DataConfig)):
        own = {f.name: f.default for f in fields(cls)}
        for name, value in laptop[section].items():
            flag = "--data" if (section, name) == ("data", "source") else "--" + name.replace("_", "-")
            assert f"(default {value})" in entries[flag], \
                f"{flag}: the laptop preset's {section}.{name}={value}, not the dataclass's " \
                f"{own[name]}: {entries[flag]}"
            differ += value != own[name]
        for name, hint in get_type_hints(cls).items():
            literal = next((h for h in (hint, *get_args(hint)) if get_origin(h) is Literal), None)
            if literal is not None and name not in ("vocab_size",):
                flag = "--" + name.replace("_", "-")
                choices = "{" + ",".join(map(str, get_args(literal))) + "}"
                assert entries[flag].startswith(f"{flag} {choices}"), \
                    f"{flag} lists its choices {choices}: {entries[flag]}"
    assert differ >= 10, f"the laptop preset changes many defaults; only {differ} differ"
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "The defaults shown are the laptop preset's (the default --preset)" in text, text
    assert "`basegpt config show --preset NAME` prints another preset's settings" in text, text
    assert "A budget you set (--max-steps, --epochs, --max-minutes) replaces the preset's" \
        in text, text
    assert "a named dataset: stdlib (the built-in corpus: this Python's standard library) or " \
           "shakespeare" in text, "--data lists the names it takes"


@pytest.mark.parametrize("argv", [[], ["tokenizer"], ["import"], ["config", "show"]])
def test_help_has_examples(argv, capsys):
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and out.count("basegpt ") >= 3, out


def test_the_command_line_asks_malloc_to_keep_freed_memory_on_a_cpu(monkeypatch):
    import basegpt.fast
    calls = []
    monkeypatch.setattr(basegpt.fast, "keep_freed_memory",
                        lambda: calls.append(1) or "glibc malloc keeps freed memory (test)")
    _train_call(["--device", "cpu", "--max-steps", "1"], monkeypatch)
    assert calls == [1], "basegpt train sets it once, for its own process"
