"""`basegpt generate RUN_DIR ...`: on a run directory written by checkpoint.save_run, the CLI
prints what the library generates (streamed or not), one prompt per line in --interactive mode,
and a missing or incompatible run directory is a one-line error with exit code 2."""

from __future__ import annotations

import io
import json

import pytest
import torch

from basegpt import Tokenizer
from basegpt.api import load_run as api_load_run
from basegpt.checkpoint import load_run, save_run
from basegpt.cli import main
from basegpt.config import ModelConfig
from basegpt.devices import pick_device
from basegpt.generate import generate
from basegpt.model import B2lM


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tokenizer = Tokenizer(vocab_size=300)
    torch.manual_seed(0)
    model = B2lM(ModelConfig(vocab_size=len(tokenizer), n_context=64, n_block=2, n_embed=32,
                             n_head=4, n_k=8, n_v=8, n_ff=64))
    return save_run(tmp_path_factory.mktemp("run"), model, tokenizer)


def library(run_dir, prompt, **kw):
    run = load_run(run_dir, device=pick_device("auto"))           # the CLI's default device
    return generate(run.model, run.tokenizer, prompt, **kw)


def test_generate_prints_the_prompt_and_the_streamed_text(run_dir, capsys):
    code = main(["generate", str(run_dir), "--prompt", "Hi", "--max-new-tokens", "20",
                 "--seed", "3", "--top-k", "40"])
    out = capsys.readouterr().out
    assert code == 0, "exit code 0"
    expected = "Hi" + library(run_dir, "Hi", max_new_tokens=20, seed=3, top_k=40) + "\n"
    assert out == expected, f"stdout {out!r} vs {expected!r}"
    for flag in ("--stream", "--no-stream", "--no-fast-step"):
        assert main(["generate", str(run_dir), "--prompt", "Hi", "--max-new-tokens", "20",
                     "--seed", "3", "--top-k", "40", flag]) == 0
        assert capsys.readouterr().out == expected, f"{flag} prints the same text"


def test_no_fast_step_runs_every_step_through_the_forward(run_dir, monkeypatch):
    from basegpt.fast.decode import DecodeStep
    calls = []
    real = DecodeStep.__call__
    monkeypatch.setattr(DecodeStep, "__call__", lambda self, *a: calls.append(1) or real(self, *a))
    args = ["generate", str(run_dir), "--prompt", "Hi", "--max-new-tokens", "10", "--seed", "3"]
    assert main(args) == 0 and len(calls) == 9, "by default: the prefill, then 9 fast steps"
    calls.clear()
    assert main(args + ["--no-fast-step"]) == 0 and calls == [], "no DecodeStep at all"


def test_stream_flag_streams_and_no_stream_prints_once(run_dir, monkeypatch):
    writes = []

    class Recorder(io.StringIO):
        def write(self, text: str) -> int:
            if text:
                writes.append(text)
            return super().write(text)

    monkeypatch.setattr("sys.stdout", Recorder())
    args = ["generate", str(run_dir), "--prompt", "Hi", "--max-new-tokens", "20", "--seed", "3"]
    assert main(args + ["--stream"]) == 0
    streamed, writes[:] = list(writes), []
    assert main(args + ["--no-stream"]) == 0
    # --no-stream: the prompt, the whole text, the newline; streaming writes piece by piece.
    assert len(writes) == 3 and "".join(writes) == "".join(streamed), f"printed {writes}"
    assert len(streamed) > 3, f"--stream prints the text as it comes: {streamed}"


def test_num_samples_use_consecutive_seeds_and_stop_strings_work(run_dir, capsys, tmp_path):
    prompt_file = tmp_path / "p.txt"
    prompt_file.write_text("ab", encoding="utf-8")
    assert main(["generate", str(run_dir), "--prompt-file", str(prompt_file), "--num-samples", "2",
                 "--seed", "5", "--max-new-tokens", "15", "--temperature", "0.9",
                 "--stop", "\\n"]) == 0
    out = capsys.readouterr().out
    texts = [library(run_dir, "ab", max_new_tokens=15, temperature=0.9, seed=s, stop=["\n"])
             for s in (5, 6)]
    expected = "".join(f"=== sample {i + 1} of 2 ===\nab{t}\n" for i, t in enumerate(texts))
    assert out == expected, f"stdout {out!r}"


def test_interactive_reads_prompts_until_eof(run_dir, capsys, monkeypatch):
    prompts = ("hello", "x", "Hi")                # three different greedy continuations here
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n\nx\nHi\n"))
    assert main(["generate", str(run_dir), "--interactive", "--temperature", "0",
                 "--max-new-tokens", "6"]) == 0
    out = capsys.readouterr().out
    alone = [library(run_dir, p, max_new_tokens=6, temperature=0) for p in prompts]
    assert len(set(alone)) == 3, f"the prompts must give different continuations: {alone}"
    # Piped in, nothing echoes the prompts: the output shows each after "> ", its answer
    # below, and a blank line between one answer and the next prompt.
    assert out == "\n".join(f"> {p}\n{text}\n" for p, text in zip(prompts, alone)), \
        f"a transcript: each non-empty prompt, then the text it alone gives, in order: {out!r}"


def test_interactive_at_a_terminal_prints_the_marker_before_reading(run_dir, capsys,
                                                                   monkeypatch):
    """At a terminal, which echoes what is typed, "> " comes first and the prompt is not
    printed again; EOF ends the line the last marker started."""
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True
    monkeypatch.setattr("sys.stdin", Terminal("hello\n\nx\n"))
    assert main(["generate", str(run_dir), "--interactive", "--temperature", "0",
                 "--max-new-tokens", "6"]) == 0
    out = capsys.readouterr().out
    hello, x = (library(run_dir, p, max_new_tokens=6, temperature=0) for p in ("hello", "x"))
    assert out == f"> {hello}\n\n> > {x}\n\n> \n", \
        f"marker, (echoed prompt), answer, blank line; an empty line just asks again: {out!r}"


def test_missing_or_incompatible_run_directory_exits_2(run_dir, capsys, tmp_path):
    assert main(["generate", str(tmp_path / "nope"), "--prompt", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("basegpt: error:") and err.count("\n") == 1, f"one line: {err!r}"
    assert "no such run directory" in err, err
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("model.safetensors", "tokenizer.json"):
        (broken / name).write_bytes((run_dir / name).read_bytes())
    config = json.loads((run_dir / "config.json").read_text())
    config["model"]["n_embed"] = 48                                   # weights no longer fit
    (broken / "config.json").write_text(json.dumps(config))
    assert main(["generate", str(broken), "--prompt", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "shape" in err, f"incompatible weights: {err!r}"


def test_bad_sampling_flags_exit_2_with_the_valid_range(run_dir, capsys):
    assert main(["generate", str(run_dir), "--prompt", "x", "--top-p", "1.5"]) == 2
    out, err = capsys.readouterr()
    assert "top_p=1.5: must be in (0, 1]" in err, "names the range"
    assert out == "", f"checked before the prompt is printed: {out!r}"
    assert main(["generate", str(run_dir), "--prompt", "x", "--stop", ""]) == 2
    out, err = capsys.readouterr()
    assert "empty stop string" in err and out == "", f"stdout {out!r}, stderr {err!r}"
    assert main(["generate", str(run_dir), "--prompt", "x", "--prompt-file", "f"]) == 2
    assert "not both" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--device", "foo"], "unknown device 'foo'; choose one of: auto, cpu"),
    (["--device", "cuda"], "device 'cuda' is not available on this machine; choose one of: auto, cpu"),
    (["--interactive"], "--interactive reads its prompts from stdin; drop --prompt"),
])
def test_bad_device_or_flag_combination_exits_2_with_one_line(run_dir, capsys, monkeypatch,
                                                             extra, message):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)    # the same on a GPU box
    monkeypatch.setattr("torch.backends.mps.is_available", lambda: False)
    assert main(["generate", str(run_dir), "--prompt", "x"] + extra) == 2
    out, err = capsys.readouterr()
    assert err.startswith("basegpt: error: ") and err.count("\n") == 1 and message in err, \
        f"one line naming the problem: {err!r}"
    assert out == "", f"nothing generated: {out!r}"


def test_prompt_file_that_is_a_directory_says_so(run_dir, capsys, tmp_path):
    assert main(["generate", str(run_dir), "--prompt-file", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path} is a directory, not a file" in err, err


# -- one settings object: GenerationConfig ------------------------------------------------------

@pytest.mark.parametrize("settings, flags, message", [
    ({"top_p": 1.5}, ["--top-p", "1.5"], "top_p=1.5: must be in (0, 1]"),
    ({"temperature": -1.0}, ["--temperature", "-1"], "temperature=-1.0: must be a finite number >= 0"),
    ({"top_k": -2}, ["--top-k", "-2"], "top_k=-2: must be an integer >= 0"),
    ({"repetition_penalty": 0.0}, ["--repetition-penalty", "0"],
     "repetition_penalty=0.0: must be a finite number > 0"),
    ({"max_new_tokens": -1}, ["--max-new-tokens", "-1"], "max_new_tokens=-1: must be an integer >= 0"),
    ({"seed": 2**64}, ["--seed", str(2**64)], f"seed={2**64}: must be in 0..{2**63 - 1}"),
    ({"stop": ""}, ["--stop", ""], "an empty stop string would stop before the first token"),
])
def test_a_bad_setting_is_the_same_error_from_the_config_the_library_and_the_cli(
        run_dir, capsys, settings, flags, message):
    from basegpt.generate import GenerationConfig, generate_ids, stream
    run = api_load_run(run_dir)                 # a Run that generates
    with pytest.raises(ValueError) as made:
        GenerationConfig(**settings)
    assert message in str(made.value), f"the config says what is wrong: {made.value}"
    calls = {"generate": lambda: generate(run.model, run.tokenizer, "x", **settings),
             "stream": lambda: stream(run.model, run.tokenizer, "x", **settings),
             "generate_ids": lambda: generate_ids(run.model, [[1]], **settings),
             "Run.generate": lambda: run.generate("x", **settings)}
    for name, call in calls.items():
        with pytest.raises(ValueError) as raised:
            call()
        assert str(raised.value) == str(made.value), f"{name}: {raised.value}"
    assert main(["generate", str(run_dir), "--prompt", "x", *flags]) == 2
    out, err = capsys.readouterr()
    assert err == f"basegpt: error: {made.value}\n", f"the CLI prints the same line: {err!r}"
    assert out == "", f"checked before the prompt is printed: {out!r}"


def test_a_config_and_keywords_give_the_same_text_and_keywords_override_it(run_dir):
    from basegpt.generate import GenerationConfig, stream
    run = load_run(run_dir)
    config = GenerationConfig(max_new_tokens=12, temperature=0.8, top_k=20, seed=3, stop="\n")
    by_words = generate(run.model, run.tokenizer, "Hi", max_new_tokens=12, temperature=0.8,
                        top_k=20, seed=3, stop="\n")
    assert generate(run.model, run.tokenizer, "Hi", config=config) == by_words, "config = keywords"
    assert "".join(stream(run.model, run.tokenizer, "Hi", config=config)) == by_words, "stream"
    greedy = generate(run.model, run.tokenizer, "Hi", max_new_tokens=12, temperature=0, stop="\n")
    assert generate(run.model, run.tokenizer, "Hi", config=config, temperature=0) == greedy, \
        "a keyword replaces that field of the config"
    assert config.temperature == 0.8, "and the config itself is unchanged"


def test_the_config_is_frozen_and_none_means_off():
    import dataclasses
    from basegpt.generate import GenerationConfig
    config = GenerationConfig(top_k=None, top_p=None, min_p=None, repetition_penalty=None,
                              temperature=None, stop=None)
    assert config == GenerationConfig(), f"None is stored as the off value: {config}"
    assert GenerationConfig(stop="\n\n").stop == ("\n\n",), "one stop string becomes a tuple"
    assert GenerationConfig(stop=[5, "x"]).stop == (5, "x"), "a list becomes a tuple"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.temperature = 0.5


@pytest.mark.parametrize("call", ["generate", "stream", "generate_ids", "config"])
def test_an_unknown_setting_is_a_type_error_naming_the_nearest(run_dir, call):
    from basegpt.generate import GenerationConfig, generate_ids, stream
    run = load_run(run_dir)
    calls = {"generate": lambda: generate(run.model, run.tokenizer, "x", top_kk=3),
             "stream": lambda: stream(run.model, run.tokenizer, "x", top_kk=3),
             "generate_ids": lambda: generate_ids(run.model, [[1]], top_kk=3),
             "config": lambda: GenerationConfig.build(GenerationConfig(), top_kk=3)}
    with pytest.raises(TypeError, match=r"unknown generation setting 'top_kk'; did you mean "
                                        r"'top_k'\?"):
        calls[call]()
    with pytest.raises(TypeError, match=r"config must be a GenerationConfig, got dict"):
        generate(run.model, run.tokenizer, "x", config={"top_k": 3})


def test_generate_has_one_flag_per_config_field_with_its_default(cli_help):
    import dataclasses
    from basegpt.generate import GenerationConfig
    entries = cli_help(["generate"])
    for f in dataclasses.fields(GenerationConfig):
        flag = "--" + f.name.replace("_", "-")
        assert flag in entries, f"no {flag} for GenerationConfig.{f.name}"
        if f.name != "stop":                             # --stop TEXT, repeatable
            assert f"(default {f.default})" in entries[flag], \
                f"{flag} shows the config's default: {entries[flag]}"


def test_generate_cli_flags_build_the_config(run_dir, capsys):
    args = ["generate", str(run_dir), "--prompt", "Hi", "--max-new-tokens", "12", "--seed", "3",
            "--min-p", "0.05", "--no-stop-at-eot", "--no-use-cache", "--stop", "e"]
    assert main(args) == 0
    expected = library(run_dir, "Hi", max_new_tokens=12, seed=3, min_p=0.05, stop_at_eot=False,
                       use_cache=False, stop="e")
    assert capsys.readouterr().out == "Hi" + expected + "\n"
    assert main(["generate", str(run_dir), "--prompt", "x" * 70, "--strict-context"]) == 2
    assert "strict_context=False to slide the window" in capsys.readouterr().err, \
        "--strict-context refuses a prompt + max_new_tokens beyond n_context"
