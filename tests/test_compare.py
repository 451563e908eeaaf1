"""basegpt compare (basegpt/ablation.py): equal budgets, resumable runs, the table's numbers,
and grids refused before any training."""

import importlib
import json
from pathlib import Path

import pytest

from basegpt import B2lM, builtin_corpus
from basegpt.config import ModelConfig, TrainConfig
from basegpt.model.memory import parameter_count

from basegpt.ablation_table import verdict
from helpers import default_ctrl_c

ablation = importlib.import_module("basegpt.ablation")   # basegpt.compare is the function
runs = importlib.import_module("basegpt.ablation_runs")  # where the runs train

# Tiny runs: 2 blocks x 32, context 16, batch 4 -> 64 tokens a step, evaluated every 2 steps.
TINY = {"model": {"n_block": 2, "n_embed": 32, "n_head": 2, "n_k": 16, "n_v": 16, "n_ff": 64,
                  "n_context": 16},
        "train": {"batch_size": 4, "eval_every": 2, "eval_tokens": 512, "device": "cpu",
                  "checkpoint_every": 2, "compile": "off"},
        "data": {"vocab_size": 260}}
TINY_FLAGS = ["--preset", "seed", "--n-block", "2", "--n-embed", "32", "--n-head", "2",
              "--n-k", "16", "--n-v", "16", "--n-ff", "64", "--n-context", "16",
              "--batch-size", "4", "--vocab-size", "260", "--eval-every", "2",
              "--eval-tokens", "512", "--device", "cpu", "--compile", "off"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A 40 kB text file, with a cache of its own for the tokenizer and shards."""
    folder = tmp_path_factory.mktemp("compare-data")
    path = folder / "text.txt"
    path.write_text("".join(builtin_corpus(40_000))[:40_000], encoding="utf-8")
    return path


@pytest.fixture
def env(corpus, monkeypatch):
    monkeypatch.setenv("BASEGPT_CACHE", str(corpus.parent / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    spec = json.loads(json.dumps(TINY))
    spec["data"]["inputs"] = [str(corpus)]
    return spec


# ------------------------------------------------------------------------ budgets

@pytest.mark.parametrize("settings", [
    {}, {"tie_weights": True}, {"positional": "learned"}, {"activation": "swiglu"},
    {"n_head": 4, "n_kv_head": 2, "positional": "rope", "norm_position": "pre"},
    {"n_block": 2, "blocks": [{"n_head": 2, "n_ff": 48}, {"activation": "gelu"}]}])
def test_flops_per_token_from_the_config_is_the_models_own(settings):
    config = ModelConfig(vocab_size=300, n_context=16, n_embed=32, n_k=8, n_v=8, n_ff=64,
                         **settings)
    assert ablation.flops_per_token(config) == B2lM(config).flops_per_token()


def test_token_and_flop_budgets_become_whole_steps_of_the_batch():
    model = ModelConfig(vocab_size=300, n_context=16, n_embed=32, n_k=8, n_v=8, n_ff=64)
    train = TrainConfig(batch_size=4)                               # 64 tokens a step
    assert ablation.budget_settings(("tokens", 1000), model, train) == {
        "max_steps": 15, "epochs": None, "max_minutes": None}      # 1000 // 64
    accum = TrainConfig(batch_size=4, batch_tokens=256)
    assert ablation.budget_settings(("tokens", 1000), model, accum)["max_steps"] == 3
    per_step = ablation.flops_per_token(model) * 64
    assert ablation.budget_settings(("flops", 7 * per_step + 1), model, train)["max_steps"] == 7
    assert ablation.budget_settings(("minutes", 2.5), model, train) == {
        "max_steps": None, "epochs": None, "max_minutes": 2.5}
    with pytest.raises(ValueError, match=r"a budget of 10 tokens seen is less than one step "
                                         r"\(64 tokens"):
        ablation.budget_settings(("tokens", 10), model, train)


@pytest.mark.slow
def test_a_flops_budget_gives_a_bigger_model_fewer_steps(env, tmp_path):
    wide = ablation.Variant("wide", {"n_ff": 256})
    table = ablation.compare([wide], spec=env, preset="seed", budget=("flops", 1e8),
                             out=tmp_path / "c", jobs=1, progress=False)
    for v in table.variants:
        assert v.max_steps == int(1e8 // (v.flops_per_token * 64)), v.name
        assert [r["steps"] for r in v.runs] == [v.max_steps]
        assert v.runs[0]["tokens"] == v.max_steps * 64
    assert table.variants[1].max_steps < table.variants[0].max_steps


def test_match_params_lands_within_two_percent_and_counts_exactly():
    base = ModelConfig(vocab_size=300, n_context=16, n_embed=32, n_k=8, n_v=8, n_ff=64)
    swiglu = base.replace(activation="swiglu")
    matched = ablation.match_n_ff(base, swiglu, "swiglu")
    assert matched.n_ff < base.n_ff, matched.n_ff          # a third matrix: narrower
    assert abs(parameter_count(matched) - parameter_count(base)) <= 0.02 * parameter_count(base)
    assert parameter_count(matched) == B2lM(matched).num_parameters()
    fixed = base.replace(n_block=1, blocks=[{"n_ff": 8}])
    with pytest.raises(ValueError, match="variant 'fixed': every block sets its own n_ff"):
        ablation.match_n_ff(base, fixed, "fixed")


# ------------------------------------------------------------------------ the table

@pytest.mark.parametrize("base, other, expected", [
    ([1.0, 1.2], [1.25, 1.3], "no clear difference"),     # diff 0.175 <= base range 0.2
    ([1.0, 1.02], [1.25, 1.3], "clear"),                   # diff 0.265 > 0.05
    ([1.0, 1.02], [0.9, 1.1], "no clear difference"),      # the variant's range 0.2 counts
    ([1.0, 1.2], [1.1, 1.1], "no clear difference"),       # diff 0.0 inside it
    ([1.0], [2.0], "1 seed: no spread"),
])
def test_verdict_flags_differences_within_the_seed_spread(base, other, expected):
    assert verdict(base, other) == expected


# ------------------------------------------------------------------------ bad grids

def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("grid, message", [
    ('[variants.a]\npositionl = "rope"\n',
     "variant 'a': unknown field 'positionl'; did you mean 'positional'?"),
    ('[variants.a]\nnorm = "batchnorm"\n',
     "variant 'a': norm='batchnorm': choose one of 'layernorm', 'rmsnorm'"),
    ('[variants.gqa]\nn_kv_head = 3\n', "variant 'gqa': n_head=4"),
    ('[variants.a]\nblocks = [{}, {}]\n', "variant 'a': "),           # seed has 4 blocks
    ('[variants.a]\nseed = 3\n', "variant 'a': seed cannot vary: seeds are the compare's own"),
    ('[variants.a]\nlr = 0.01\n[variants.a]\nlr = 0.02\n', "is not a valid TOML config"),
    ('[variants.base]\nlr = 0.01\n', "variant 'base' is the base spec's own name"),
    ('base = "b"\n[variants.a]\nlr = 0.01\n', "base = 'b' names no variant"),
    ('[variants."a/b"]\nlr = 0.01\n', "variant 'a/b': a name becomes a folder"),
])
def test_a_bad_grid_is_an_error_naming_variant_and_field_before_any_work(
        grid, message, tmp_path, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("training or tokenizing started before the grid was checked")
    monkeypatch.setattr(runs, "train_run", no_work)
    monkeypatch.setattr(ablation, "get_tokenizer", no_work)
    path = write(tmp_path / "grid.toml", grid)
    with pytest.raises(ValueError) as error:
        variants, base = ablation.load_grid(path)
        ablation.compare(variants, base=base, preset="seed", out=tmp_path / "c",
                         progress=False)
    assert message in str(error.value), str(error.value)
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("flags, message", [
    (["--vary", "lr=0.01,0.01"], "variant 'lr=0.01' is named twice"),
    (["--vary", "lr=0.01", "--vary", "lr=0.02"], "--vary names 'lr' twice"),
    (["--vary", "positional=rope,spiral"],
     "variant 'positional=spiral': positional='spiral': choose one of"),
    (["--vary", "n_kv_head=1,3"], "variant 'n_kv_head=3': n_head=4"),
    (["--vary", "widht=64"], "--vary widht=64: unknown field 'widht'"),
    (["--vary", "lr"], "--vary 'lr': write FIELD=VALUE"),
    (["--vary", "lr=0.01", "--max-steps", "5"], "--max-steps: the budget is the compare's own"),
    (["--vary", "lr=0.01", "--jobs", "0"], "jobs=0: must be an integer >= 1"),
    ([], "give the variants with --vary FIELD=A,B (one or more) or with --grid"),
])
def test_bad_vary_flags_are_one_line_errors_before_any_work(flags, message, tmp_path, capsys,
                                                           monkeypatch):
    from basegpt.cli import main

    def no_work(*args, **kwargs):
        raise AssertionError("training or tokenizing started before the variants were checked")
    monkeypatch.setattr(runs, "train_run", no_work)
    monkeypatch.setattr(ablation, "get_tokenizer", no_work)
    assert main(["compare", "--preset", "seed", *flags, "--out", str(tmp_path / "c"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("basegpt: error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert not (tmp_path / "c").exists()


@pytest.mark.slow
def test_under_torchrun_each_run_trains_on_every_process_like_one_process(env, corpus,
                                                                          tmp_path):
    """`torchrun --nproc_per_node=2 -m basegpt compare`: each run is a data-parallel run of
    the two processes, process 0 writes; with the global batch a single process takes in
    one step (batch_tokens), the budget is the same number of steps and the numbers are one
    process's, to float tolerance."""
    import os
    import socket
    import subprocess
    import sys
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "two"
    flags = [*TINY_FLAGS, "--batch-size", "2", "--batch-tokens", "64"]   # 2 x 16 x 2 procs
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                    f"--master_port={port}", "-m", "basegpt", "compare", str(corpus), *flags,
                    "--vary", "lr=0.002", "--budget-tokens", str(4 * 64), "--out", str(out),
                    "--quiet"], check=True, timeout=300,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    two = json.loads((out / "compare.json").read_text())
    spec = ablation.merge_specs(env, {"train": {"batch_tokens": 64}})       # batch 4 x 16
    one = ablation.compare({"lr=0.002": {"lr": 0.002}}, spec=spec, preset="seed",
                           budget=("tokens", 4 * 64), out=tmp_path / "one", jobs=1,
                           progress=False).to_dict()
    for a, b in zip(one["variants"], two["variants"], strict=True):
        assert a["max_steps"] == b["max_steps"] == 4
        assert b["runs"][0]["tokens"] == 4 * 64 and b["runs"][0]["steps"] == 4
        assert b["runs"][0]["val_bpb"] == pytest.approx(a["runs"][0]["val_bpb"], rel=1e-4)
    assert json.loads((out / "base" / "seed0" / "run.json").read_text())[0]["processes"] == 2


def test_jobs_under_torchrun_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="under torchrun every run trains on all the "
                                         "processes, one run at a time; drop --jobs"):
        ablation.compare({"a": {"lr": 0.002}}, preset="seed", out=tmp_path / "c", jobs=2,
                         progress=False)
    assert not (tmp_path / "c").exists()


def test_vary_reads_values_as_their_fields_take_them():
    variants = ablation.vary(["positional=none,rope", "n_kv_head=none,1", "tie_weights=true"])
    assert [v.name for v in variants][:2] == ["positional=none,n_kv_head=none,tie_weights=true",
                                              "positional=none,n_kv_head=1,tie_weights=true"]
    assert variants[0].overrides == {"positional": "none", "n_kv_head": None, "tie_weights": True}
    assert variants[3].overrides == {"positional": "rope", "n_kv_head": 1, "tie_weights": True}


# ------------------------------------------------------------------------ runs

@pytest.mark.slow
def test_an_interrupted_compare_reruns_only_what_did_not_finish(env, tmp_path, monkeypatch):
    real = runs.train_run
    calls, cut = [], {"armed": True}

    def power_cut_in_b(spec, out, **kwargs):
        calls.append((Path(out).parent.name, kwargs.get("resume", False)))
        if cut["armed"] and Path(out).parent.name == "b":
            def cut_at_step_4(record):            # after step 4's checkpoint (every 2 steps)
                if record["step"] == 4:
                    raise RuntimeError("power cut")
            kwargs["on_step"] = cut_at_step_4
        return real(spec, out, **kwargs)
    monkeypatch.setattr(runs, "train_run", power_cut_in_b)
    variants = {"a": {"lr": 0.002}, "b": {"lr": 0.003}, "c": {"lr": 0.004}}
    run = dict(spec=env, preset="seed", budget=("tokens", 6 * 64), out=tmp_path / "c",
               jobs=1, progress=False)
    with pytest.raises(RuntimeError, match="power cut"):
        ablation.compare(variants, **run)
    assert calls == [("base", False), ("a", False), ("b", False)], calls
    cut["armed"] = False
    calls.clear()
    table = ablation.compare(variants, **run)
    assert calls == [("b", True), ("c", False)], calls     # base and a had finished
    assert [v.runs[0]["steps"] for v in table.variants] == [6, 6, 6, 6]
    # A third call trains nothing and gives the same table.
    calls.clear()
    again = ablation.compare(variants, **run)
    assert calls == []
    assert again.rows() == table.rows()


def test_ctrl_c_in_a_run_stops_the_whole_comparison(env, tmp_path, monkeypatch):
    from basegpt.train import TrainResult
    calls = []

    def interrupted(spec, out, **kwargs):                # fit saves and returns on Ctrl-C
        calls.append(Path(out).parent.name)
        return TrainResult(stopped_by="signal"), None, None
    monkeypatch.setattr(runs, "train_run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ablation.compare({"a": {"lr": 0.002}}, spec=env, preset="seed", budget=("tokens", 128),
                         out=tmp_path / "c", jobs=1, progress=False)
    assert calls == ["base"], calls
    assert not (tmp_path / "c" / "compare.json").exists()


def test_a_run_made_with_other_settings_is_not_reused(env, tmp_path):
    out = tmp_path / "c"
    ablation.compare({"a": {"lr": 0.002}}, spec=env, preset="seed", budget=("tokens", 128),
                     out=out, jobs=1, progress=False)
    with pytest.raises(ValueError, match=r"c/base/seed0 holds a run made with other settings "
                                         r"\(train.max_steps\)"):
        ablation.compare({"a": {"lr": 0.002}}, spec=env, preset="seed",
                         budget=("tokens", 256), out=out, jobs=1, progress=False)


@pytest.fixture(scope="module")
def cli_compare(corpus, tmp_path_factory):
    """A 2 x 2 `basegpt compare` through the command line, two runs at once: the base and
    4 variants, one of which (sinusoidal, LayerNorm) is the seed preset's base itself, so
    4 runs of 6 steps."""
    from basegpt.cli import main
    out = tmp_path_factory.mktemp("cli-compare") / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BASEGPT_CACHE", str(corpus.parent / "cache"))
        mp.setenv("OMP_NUM_THREADS", "1")
        argv = ["compare", str(corpus), *TINY_FLAGS, "--vary", "positional=sinusoidal,rope",
                "--vary", "norm=layernorm,rmsnorm", "--budget-tokens", "400", "--jobs", "2",
                "--out", str(out), "--quiet"]
        assert main(argv) == 0
    return out, argv


@pytest.mark.slow
def test_a_2x2_compare_writes_json_markdown_and_png(cli_compare, capsys):
    out, argv = cli_compare
    data = json.loads((out / "compare.json").read_text())
    assert data["command"].startswith("basegpt compare ") and "--budget-tokens 400" in data["command"]
    assert data["budget"] == {"kind": "tokens", "amount": 400, "unit": "tokens seen",
                              "machine_dependent": False}
    names = [r["variant"] for r in data["rows"]]
    assert names == ["base", "positional=sinusoidal,norm=rmsnorm",
                     "positional=rope,norm=layernorm", "positional=rope,norm=rmsnorm"]
    assert data["variants"][0]["aliases"] == ["positional=sinusoidal,norm=layernorm"]
    assert data["rows"][0]["label"] == "base (same as positional=sinusoidal,norm=layernorm)"
    for row, variant in zip(data["rows"], data["variants"]):
        assert variant["max_steps"] == 400 // 64 == 6
        assert row["tokens"] == 6 * 64                      # tokens actually seen
        assert variant["runs"][0]["steps"] == 6
        assert row["verdict"] in ("", "1 seed: no spread")
        assert (out / row["variant"] / "seed0" / "config.json").is_file()
    rms = next(v for v in data["variants"] if v["name"].endswith("norm=rmsnorm"))
    assert rms["params"] < data["variants"][0]["params"]    # RMSNorm has no bias
    md = (out / "compare.md").read_text()
    assert "| variant | params | tokens | tokens/s | FLOPs/token | val bits/byte (min-max) |" in md
    assert "| positional=rope,norm=rmsnorm |" in md and data["command"] in md
    assert "| base (same as positional=sinusoidal,norm=layernorm) |" in md
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.parent.name for p in out.glob("*/seed0")) == sorted(names)


@pytest.mark.slow
def test_basegpt_plot_redraws_compare_png_from_compare_json(cli_compare, tmp_path, capsys):
    from basegpt.cli import main
    out, _ = cli_compare
    assert main(["plot", str(out), "--out", str(tmp_path / "again.png")]) == 0
    assert (tmp_path / "again.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert capsys.readouterr().out == f"wrote {tmp_path / 'again.png'}\n"


@pytest.mark.slow
def test_runs_at_once_give_the_numbers_of_one_thread_runs_one_after_another(
        cli_compare, corpus, tmp_path, monkeypatch):
    """The CLI's compare ran two worker processes of one thread each; the same compare in
    this process, one run after another on one thread, gives the same numbers, bit for bit:
    the same variant and seed give the same run, wherever it trains."""
    import torch
    out, argv = cli_compare
    data = json.loads((out / "compare.json").read_text())
    monkeypatch.setenv("BASEGPT_CACHE", str(corpus.parent / "cache"))
    spec = json.loads(json.dumps(TINY))
    spec["data"]["inputs"] = [str(corpus)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        table = ablation.compare(
            ablation.vary(["positional=sinusoidal,rope", "norm=layernorm,rmsnorm"]),
            spec=spec, preset="seed", budget=("tokens", 400), out=tmp_path / "again",
            jobs=1, progress=False)
    finally:
        torch.set_num_threads(threads)
    again = table.to_dict()
    for there, here in zip(data["variants"], again["variants"], strict=True):
        assert there["name"] == here["name"]
        assert there["runs"][0]["curve"] == [list(p) for p in here["runs"][0]["curve"]]
        assert there["runs"][0]["val_bpb"] == here["runs"][0]["val_bpb"]
    finals = [v["runs"][0]["val_bpb"] for v in again["variants"]]
    assert len(set(finals)) == len(finals), finals          # and the variants do differ


@pytest.mark.slow
def test_seeds_change_the_numbers_and_widen_the_spread(env, tmp_path):
    table = ablation.compare({"a": {"lr": 0.003}}, spec=env, preset="seed", seeds=2,
                             budget=("tokens", 256), out=tmp_path / "c", jobs=1,
                             progress=False)
    base = table.variants[0]
    assert [r["seed"] for r in base.runs] == [0, 1]
    low, high = base.spread
    assert low < high, base.finals                           # two seeds, two results
    row = table.rows()[1]
    assert row["verdict"] == verdict(base.finals, table.variants[1].finals)
    assert row["diff_vs_base"] == pytest.approx(table.variants[1].mean - base.mean)


@pytest.mark.slow
def test_a_variant_that_diverges_is_recorded_and_the_others_go_on(env, tmp_path, monkeypatch):
    """lr 1e30 sends the weights to 1e30 in one Adam step, and the next loss to NaN: that
    variant's run is marked diverged, the table says so, and a second call keeps it."""
    real, calls = runs.train_run, []

    def counted(spec, out, **kwargs):
        calls.append(Path(out).parent.name)
        return real(spec, out, **kwargs)
    monkeypatch.setattr(runs, "train_run", counted)
    run = dict(spec=env, preset="seed", budget=("tokens", 4 * 64), out=tmp_path / "c",
               jobs=1, progress=False)
    variants = {"boom": {"lr": 1e30}, "fine": {"lr": 0.002}}
    table = ablation.compare(variants, **run)
    assert calls == ["base", "boom", "fine"]
    boom = table.variants[1]
    assert boom.runs[0]["diverged"].startswith("non-finite loss at step ")
    assert boom.runs[0]["val_bpb"] is None and boom.mean is None
    assert (tmp_path / "c" / "boom" / "seed0" / runs.DIVERGED).is_file()
    rows = {r["variant"]: r for r in table.rows()}
    assert rows["boom"]["verdict"] == "1 of 1 seeds diverged"
    assert rows["boom"]["diff_vs_base"] is None and rows["fine"]["val_bpb_mean"] > 0
    assert "| boom | " in str(table) and "| diverged |" in str(table)
    calls.clear()
    assert ablation.compare(variants, **run).rows() == table.rows()
    assert calls == []                            # the diverged run is not tried again


@pytest.mark.slow
def test_match_params_records_the_n_ff_it_chose(env, tmp_path):
    table = ablation.compare({"swiglu": {"activation": "swiglu"}}, spec=env, preset="seed",
                             budget=("tokens", 64), out=tmp_path / "c", match_params=True,
                             jobs=1, progress=False)
    base, swiglu = table.variants
    n_ff = swiglu.matched["n_ff"]
    assert n_ff == ablation.match_n_ff(
        ModelConfig(**{**env["model"], "vocab_size": 260, "activation": "relu"}),
        ModelConfig(**{**env["model"], "vocab_size": 260, "activation": "swiglu"}),
        "swiglu").n_ff != env["model"]["n_ff"]
    saved = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert saved["variants"][1]["matched"] == {"n_ff": n_ff} and base.matched == {}
    config = json.loads((tmp_path / "c" / "swiglu" / "seed0" / "config.json").read_text())
    assert config["model"]["n_ff"] == n_ff
    assert f"| swiglu (n_ff {n_ff}) |" in (tmp_path / "c" / "compare.md").read_text()


@pytest.mark.slow
def test_the_same_comparison_from_another_folder_is_the_same(env, corpus, tmp_path,
                                                            monkeypatch):
    """Relative paths (the text and --out) name the same files from a subfolder: the runs
    are kept, not refused as made with other settings, and nothing trains again."""
    import shutil
    shutil.copy(corpus, tmp_path / "text.txt")
    (tmp_path / "sub").mkdir()
    real, calls = runs.train_run, []

    def counted(spec, out, **kwargs):
        calls.append(str(out))
        return real(spec, out, **kwargs)
    monkeypatch.setattr(runs, "train_run", counted)

    def run(text: str, out: str) -> dict:
        spec = json.loads(json.dumps(env))
        spec["data"]["inputs"] = [text]
        return ablation.compare({"a": {"lr": 0.002}}, spec=spec, preset="seed",
                                budget=("tokens", 128), out=out, jobs=1,
                                progress=False).rows()
    monkeypatch.chdir(tmp_path)
    first = run("text.txt", "c")
    assert len(calls) == 2
    monkeypatch.chdir(tmp_path / "sub")
    assert run("../text.txt", "../c") == first
    assert len(calls) == 2


@pytest.mark.slow
def test_ctrl_c_stops_runs_in_workers_saved_and_a_second_call_resumes_them(env, corpus,
                                                                          tmp_path):
    """Ctrl-C at a terminal reaches the whole process group: each worker's run saves and
    stops, `basegpt compare` exits 130, and the next call resumes both runs."""
    import os
    import signal
    import subprocess
    import sys
    import time
    out = tmp_path / "c"
    argv = [sys.executable, "-m", "basegpt", "compare", str(corpus), *TINY_FLAGS,
            "--vary", "lr=0.002", "--budget-tokens", str(600 * 64), "--eval-every", "300",
            "--jobs", "2",
            "--out", str(out), "--quiet"]
    child = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=os.environ,
                             preexec_fn=default_ctrl_c)
    metrics = [out / name / "seed0" / "metrics.jsonl" for name in ("base", "lr=0.002")]
    deadline = time.monotonic() + 60
    while not all(m.is_file() and m.stat().st_size for m in metrics):
        assert child.poll() is None and time.monotonic() < deadline, child.communicate()
        time.sleep(0.1)
    os.killpg(child.pid, signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    assert not (out / "compare.json").exists()
    steps = [json.loads(m.read_text().splitlines()[-1])["step"] for m in metrics]
    assert all(0 < s < 600 for s in steps), steps            # stopped early, saved
    spec = ablation.merge_specs(env, {"train": {"checkpoint_every": 200,   # the preset's
                                                "eval_every": 300}})
    table = ablation.compare({"lr=0.002": {"lr": 0.002}}, spec=spec, preset="seed",
                             budget=("tokens", 600 * 64), out=out, jobs=1, progress=False)
    assert [v.runs[0]["steps"] for v in table.variants] == [600, 600]


def test_basegpt_compare_is_the_function():
    import basegpt
    assert basegpt.compare is ablation.compare


@pytest.mark.slow
def test_off_a_terminal_progress_comes_as_lines_not_redraws(corpus, tmp_path, capsys,
                                                          monkeypatch):
    """Sent to a file, the overall bar is plain lines (basegpt.progress), as train's is: a
    tqdm bar there writes carriage returns and redraws that a log keeps forever. The runs'
    bars, two at once, too."""
    from basegpt.cli import main
    monkeypatch.setenv("BASEGPT_CACHE", str(corpus.parent / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    argv = ["compare", str(corpus), *TINY_FLAGS, "--vary", "positional=rope",
            "--budget-tokens", "128", "--jobs", "2", "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "\r" not in err, err[-2000:]
    assert "compare: 2/2 run (100%)" in err, err[-2000:]
    # Two runs at once (one per core, the default here): each has its bar, by the overall
    # one, each closing on its own last line.
    for run in ("base/seed0", "positional=rope/seed0"):
        assert f"{run}: 2/2 step (100%)" in err, err[-2000:]
