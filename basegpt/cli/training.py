"""`basegpt train`, `basegpt plot` and `basegpt config show`, with one --flag per field of
ModelConfig, TrainConfig and DataConfig (derived from the dataclasses by
_common.add_field_flags), whose help shows the value the default preset gives it."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from basegpt._io import check_writable, file_in_the_way
from basegpt.cli._common import _log, _Parser, add_field_flags, field_values


# ------------------------------------------------------------------------ train, plot, config

_FLAG_NAMES = {"data.source": "--data"}   # `--data shakespeare` reads better than --source


def _overrides(args: argparse.Namespace) -> dict[str, dict]:
    out = {section: field_values(args, section) for section in ("model", "train", "data")}
    if getattr(args, "inputs", None):
        # As absolute paths: the run records them, and a later --resume (which finds its data
        # through them) may start in another folder. Globs stay globs.
        out["data"]["inputs"] = [os.path.abspath(path) for path in args.inputs]
    return out


def _defaults_note(preset: str) -> str:
    from basegpt.recipe import DEFAULT_PRESET
    which = ("the default --preset" if preset == DEFAULT_PRESET
             else f"--preset {preset}; without it, {DEFAULT_PRESET}")
    return (f"The defaults shown are the {preset} preset's ({which});\n"
            "`--preset NAME --help` shows another preset's, and `basegpt config show --preset "
            "NAME`\nprints another preset's settings. A budget you set (--max-steps, --epochs, "
            "--max-minutes)\nreplaces the preset's, whose other budgets then do not apply.")


def _add_spec_flags(p: argparse.ArgumentParser, preset_name: str) -> None:
    """The positional inputs, --preset, --config and one flag per settings field, whose help
    shows the value the preset `preset_name` gives it (what a run without the flag uses)."""
    from basegpt.config import DataConfig, ModelConfig, TrainConfig
    from basegpt.recipe import DEFAULT_PRESET, load_preset, merge_specs, preset_names
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="text files, folders or globs to train on, or one folder made by "
                        "`basegpt prepare` (default: data.source)")
    p.add_argument("--preset", choices=preset_names(), default=None,
                   help=f"named settings to start from (default {DEFAULT_PRESET})")
    p.add_argument("--config", type=Path, help="a JSON or TOML file with model/train/data "
                                               "sections; overrides the preset")
    preset = merge_specs(load_preset(preset_name))          # {section: {field: value}}
    for section, cls, skip in (("data", DataConfig, ("inputs",)),
                               ("model", ModelConfig, ("vocab_size", "blocks")),
                               ("train", TrainConfig, ())):
        add_field_flags(p, cls, section, defaults=preset[section], skip=skip,
                        flag_names=_FLAG_NAMES,
                        title=f"{section} settings (override preset and --config; defaults: "
                              f"the {preset_name} preset's)")


def _add_train(sub: argparse._SubParsersAction, preset: str) -> None:
    p = sub.add_parser(
        "train", help="train a model (no arguments: the main job on the built-in corpus)",
        description="Train a tokenizer (cached), prepare the data (cached), train a model "
                    "into a run directory,\nand print a sample. Settings: --preset, then "
                    "--config FILE, then flags.\n" + _defaults_note(preset),
        epilog="examples:\n  basegpt train                                  # the main job\n"
               "  basegpt train --preset seed --max-minutes 2 --out runs/seed\n"
               "  basegpt train --data shakespeare --n-block 6 --out runs/shakes\n"
               "  basegpt train --resume runs/laptop --max-minutes 5   # continue a run\n"
               "  torchrun --nproc_per_node=2 -m basegpt train --out runs/ddp",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None,
                   help="run directory (default runs/NAME, NAME the first INPUT's (mytext.txt "
                        "or mytext/ -> runs/mytext), else --data's when not the preset's own, "
                        "else the preset's; numbered runs/NAME-2, -3, ... when taken, so no run "
                        "is written over (but with --overwrite)")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                   help="continue this run from its latest checkpoint")
    p.add_argument("--init-from", type=Path, default=None, metavar="RUN_DIR",
                   help="fine-tune: start a new run (--out) from this run's weights, model and "
                        "tokenizer (an imported HF run, any run, or RUN/best), with a fresh "
                        "optimizer at step 0; data and training settings as usual, model "
                        "settings only dropout and kernels")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar or log")
    _add_spec_flags(p, preset)
    p.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from basegpt.recipe import DEFAULT_PRESET, resolve_spec, train_run
    overrides = _overrides(args)
    if args.init_from is not None and args.resume is not None:
        raise ValueError("--init-from starts a new run from another run's weights and --resume "
                         "continues a run from its own: give one of them")
    if args.init_from is not None and args.out is None:
        raise ValueError("--init-from starts a new run: name its directory with --out, e.g. "
                         "--out runs/finetuned")
    from basegpt import distributed
    # Under torchrun every process runs this; one of them tells the story.
    quiet = args.quiet or not distributed.setup().is_main
    log = (lambda m: None) if quiet else _log               # above the progress bar
    if args.resume is not None:
        if args.preset or args.config or overrides["model"] or overrides["data"]:
            raise ValueError("--resume continues a run with its own model and data settings; "
                             "only training flags (e.g. --max-minutes, --max-steps) may change")
        out, spec = args.resume, {"train": overrides["train"]}
    else:
        spec = resolve_spec(args.preset, args.config, overrides, init_from=args.init_from)
        out = args.out or _default_out(spec, args.preset or DEFAULT_PRESET, args.overwrite,
                                       log=log)
        _check_folder_path(out, "--out")        # before minutes of tokenizer training
        _check_memory(spec)
    if args.resume is None or out.is_dir():      # a missing run is train_run's to report
        check_writable(out)                      # read-only, no permission, no space: now
    _keep_freed_memory(spec, args.resume)
    result, model, tokenizer = train_run(spec, out, resume=args.resume is not None,
                                         init_from=args.init_from, overwrite=args.overwrite,
                                         progress=not quiet, log=log)
    if not distributed.setup().is_main:
        return 0
    last = result.evals[-1] if result.evals else {}
    scores = ", ".join(f"{k} {last[k]:.4f}" for k in ("val_loss", "val_ppl", "val_bpb") if k in last)
    print(f"trained {result.steps} steps ({result.tokens:,} tokens, {result.seconds:.0f} s, "
          f"stopped by {result.stopped_by}){': ' + scores if scores else ''} -> {out}")
    if result.stopped_by == "signal":
        return 130
    import shlex
    from basegpt.checkpoint import read_config
    from basegpt.config import TrainConfig
    from basegpt.generate import generate
    from basegpt.recipe import more_budget, sample_prompt
    prompt = sample_prompt(out, tokenizer)
    sample = generate(model, tokenizer, prompt, max_new_tokens=120, temperature=0.8, top_k=40,
                      seed=0)
    print(f"\nsample (prompt {prompt!r}):\n{prompt}{sample}\n")
    # Raise the limit that stopped the run: each budget counts the whole run.
    more = more_budget(result.stopped_by, TrainConfig.from_dict(read_config(out)["train"]),
                       result.steps, result.seconds)
    run = shlex.quote(str(out))
    print("next:\n"
          f"  basegpt generate {run}" + (f" --prompt {shlex.quote(prompt)}" if prompt else "")
          + f"\n  basegpt train --resume {run} {more}   # the budget counts the whole run\n"
          f"  basegpt plot {run}")
    return 0


def _default_out(spec: dict[str, Any], preset: str, overwrite: bool,
                 log: Callable[[str], None]) -> Path:
    """The run directory of a new run without --out: runs/NAME, NAME what the run trains on
    (_run_name), or the first free runs/NAME-2, runs/NAME-3, ... when runs/NAME is taken, so
    that a second `basegpt train` never writes over the first. With `overwrite`, runs/NAME
    itself (the user asked to replace it)."""
    from basegpt import distributed
    base = Path("runs") / _run_name(spec, preset)
    out, n = base, 1
    while out.exists() and not overwrite:
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    if out != base:
        log(f"run directory: {out} ({base} is taken; --out names another)")
    # Under torchrun every process picks the name; none may make the folder (process 0 does,
    # in train_run) before all have looked, or they would count to different names.
    distributed.setup().barrier()
    return out


def _run_name(spec: dict[str, Any], preset: str) -> str:
    """What a run trains on, as a folder name: the first input's name (notes.txt, notes/ and
    notes/*.txt -> "notes"), else a named dataset that is not the preset's own ("shakespeare"),
    else the preset's name ("laptop")."""
    from basegpt.config import DataConfig
    from basegpt.recipe import load_preset
    inputs = spec["data"].get("inputs") or ()
    if inputs:
        path = Path(inputs[0])
        parts = path.parts
        magic = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), None)
        if magic is not None:                   # a glob: the folder it searches
            path = Path(*parts[:magic]) if magic else Path(".")
        return (path.stem if path.is_file() else path.resolve().name) or preset
    source = spec["data"].get("source")
    own = load_preset(preset).get("data", {}).get("source", DataConfig.source)
    return source if source and source != own else preset


def _check_memory(spec: dict[str, Any]) -> None:
    """Refuse settings whose training cannot fit in the memory of the device it would run on,
    before the tokenizer and the data are prepared (model/memory.py estimates it); where FSDP
    may shard or offload the training state, that building the model fits."""
    from basegpt.devices import pick_device
    from basegpt.model.memory import check_fits
    from basegpt.recipe import check_spec
    model, train, _ = check_spec(spec)        # vocab_size: the data section's, as the tokenizer's
    # Under torchrun FSDP may share the training state among the processes (fit decides,
    # sharding.choose), but every process builds the whole model before sharding it.
    shared = int(os.environ.get("WORLD_SIZE", "1")) > 1 and train.parallel != "ddp"
    check_fits(model, pick_device(train.device),
               batch_size=None if shared or train.offload else train.batch_size)


def _keep_freed_memory(spec: dict[str, Any], resume: Path | None) -> None:
    """On a CPU, ask glibc's malloc to keep freed memory in the process: a training step frees
    and re-allocates its activations, and handing them back to the system costs each step
    its page faults again (BENCHMARKS.md, training). A process-wide setting, so the command
    line (which owns the process) asks for it; the library's fit() leaves malloc alone."""
    from basegpt import fast
    from basegpt.devices import pick_device
    from basegpt.recipe import merge_specs, read_spec
    if not fast.enabled():
        return
    if resume is not None:
        spec = merge_specs(read_spec(resume), spec)
    if pick_device(spec["train"].get("device", "auto")).type == "cpu":
        fast.keep_freed_memory()                 # fit's summary says what it did


def _check_folder_path(path: Path, flag: str) -> None:
    """A folder can be made at `path`: neither it nor a folder above it is an existing file."""
    blocker = file_in_the_way(path)
    if blocker is not None:
        raise ValueError(f"{flag} {path}: {blocker} is a file, but a run directory must go "
                         f"there; move it away or choose another {flag}")


def _add_plot(sub: argparse._SubParsersAction) -> None:
    from basegpt.plot import UNITS
    p = sub.add_parser("plot", help="draw loss curves of one or more runs (or the folder of a "
                                    "`basegpt compare`) into a PNG",
                       description="Loss by step and by tokens seen, and the learning rate, "
                                   "of each run; several runs overlaid. Losses in bits per "
                                   "byte, which compare across tokenizers (--units nats: "
                                   "nats per token, as trained).",
                       epilog="examples:\n  basegpt plot runs/laptop\n"
                              "  basegpt plot runs/a runs/b --out compare.png\n"
                              "  basegpt plot runs/a runs/b --units nats --out nats.png",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    p.add_argument("--out", type=Path, default=None,
                   help="PNG to write (default RUN_DIR/loss.png for one run, else compare.png)")
    p.add_argument("--units", choices=list(UNITS), default="bpb",
                   help="bpb: bits per byte of text (default; comparable across "
                        "vocabularies); nats: nats per token")
    p.set_defaults(run=_run_plot)


def _run_plot(args: argparse.Namespace) -> None:
    from basegpt.plot import plot_runs
    for run in args.runs:
        if not run.is_dir():
            raise FileNotFoundError(f"{run}: no such run directory")
    if len(args.runs) == 1 and (args.runs[0] / "compare.json").is_file():
        from basegpt.ablation_table import redraw        # a `basegpt compare` folder
        print(f"wrote {redraw(args.runs[0], args.out)}")
        return
    out = args.out or (args.runs[0] / "loss.png" if len(args.runs) == 1 else Path("compare.png"))
    print(f"wrote {plot_runs(args.runs, out, units=args.units)}")


def _add_config(sub: argparse._SubParsersAction, preset: str) -> None:
    p = sub.add_parser("config", help="show the merged settings of a preset, file and flags",
                       epilog="examples:\n  basegpt config show\n"
                              "  basegpt config show --preset seed --lr 0.003",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    csub = p.add_subparsers(dest="config_command", required=True, metavar="COMMAND",
                            parser_class=_Parser)
    show = csub.add_parser(
        "show", help="print the merged model/train/data settings as JSON",
        description="Print the settings `basegpt train` would use with the same --preset, "
                    "--config and\nflags, every field filled in, as JSON.\n"
                    + _defaults_note(preset),
        epilog="examples:\n  basegpt config show                       # the main job (laptop preset)\n"
               "  basegpt config show --preset seed --lr 0.003\n"
               "  basegpt config show --config my.json --max-steps 100",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_spec_flags(show, preset)
    show.set_defaults(run=_run_config_show)


def _run_config_show(args: argparse.Namespace) -> None:
    import dataclasses
    from basegpt.recipe import check_spec, resolve_spec
    spec = resolve_spec(args.preset, args.config, _overrides(args))
    model, train, data = check_spec(spec)
    full = {"model": {k: v for k, v in model.to_dict().items() if k != "vocab_size"},
            "train": train.to_dict(), "data": dataclasses.asdict(data)}
    print(json.dumps(full, indent=2))
