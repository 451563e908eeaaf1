"""The `basegpt` command line. Only this module parses argv, prints results and exits.

Each subcommand is a pair: `_add_<name>(subparsers)` declares its flags, `_run_<name>(args)`
calls the library and prints. Results go to stdout, logs and progress to stderr.
Exit codes: 0 success, 2 user error (one line on stderr, no traceback), 130 interrupted.
A traceback therefore always means a bug in basegpt.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from basegpt._io import file_in_the_way
from basegpt._optional import MissingDependency
from basegpt.corpus import DEFAULT_BUILTIN_BYTES, builtin_corpus, builtin_corpus_files, \
    expand_paths, stdlib_root
from basegpt.tokenizer import BUILTIN_PATTERNS, DEFAULT_PATTERN, Tokenizer

# What a user can cause and fix: bad values, and paths that are missing, of the wrong kind
# (a file where a folder must go, or the reverse) or not writable; an optional library that
# is not installed. Any other exception is a basegpt bug and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, TypeError, FileExistsError, NotADirectoryError,
               IsADirectoryError, PermissionError, MissingDependency)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2, and an unknown
    flag is reported by the (sub)command it was given to, with the nearest valid flag."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        # argparse hands a subcommand's unknown arguments up to the top-level parser, which
        # does not know the subcommand's flags; report them here, where they are known.
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras

    def error(self, message: str) -> None:  # type: ignore[override]
        hint = ""
        if message.startswith("unrecognized arguments:"):
            # Compared without the dashes, which every flag shares: --bogus is not near --out.
            names = [s[2:] for action in self._actions for s in action.option_strings
                     if s.startswith("--")]
            for arg in message.split(":", 1)[1].split():
                near = difflib.get_close_matches(arg.split("=")[0][2:], names, n=1) \
                    if arg.startswith("--") else []
                if near:
                    hint = f"; did you mean --{near[0]}?"     # --n-embd -> --n-embed
                    break
        self.exit(2, f"{self.prog}: error: {message}{hint} (see {self.prog} --help)\n")


def _log(message: str) -> None:
    print(message, file=sys.stderr)


# ------------------------------------------------------------------------ corpus

def _add_corpus(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("corpus", help="show or write out the built-in corpus",
                       description="The built-in corpus: the .py sources of this Python's "
                                   "standard library (tests excluded), in sorted path order.",
                       epilog="examples:\n  basegpt corpus\n"
                              "  basegpt corpus --max-bytes 1000000 --out stdlib.txt",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-bytes", type=int, default=DEFAULT_BUILTIN_BYTES,
                   help=f"byte budget (default {DEFAULT_BUILTIN_BYTES:,})")
    p.add_argument("--out", type=Path, help="write the text here (documents separated by a "
                                            "blank line) instead of printing a summary")
    p.set_defaults(run=_run_corpus)


def _run_corpus(args: argparse.Namespace) -> None:
    docs = list(builtin_corpus(args.max_bytes))
    if args.out:
        from basegpt._io import atomic_write_text
        atomic_write_text(args.out, "\n\n".join(docs))
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    print(f"built-in corpus: {len(docs)} of {len(builtin_corpus_files())} files under "
          f"{stdlib_root()}, {n_bytes:,} bytes (Python {sys.version.split()[0]})"
          + (f" -> {args.out}" if args.out else ""))


# ------------------------------------------------------------------------ tokenizer

def _add_tokenizer(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokenizer", help="train, use and inspect a BPE tokenizer",
                       description="Byte-level BPE tokenizer: train, encode, decode, stats.",
                       epilog="examples:\n  basegpt tokenizer train --vocab-size 4096 --out tok.json\n"
                              "  basegpt tokenizer encode --tokenizer tok.json 'Hello, world' --show\n"
                              "  basegpt tokenizer decode --tokenizer tok.json 72 101 108 108 111\n"
                              "  basegpt tokenizer stats --tokenizer tok.json\n"
                              "  basegpt tokenizer COMMAND --help     (each command's flags)",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    tsub = p.add_subparsers(dest="tokenizer_command", required=True, metavar="COMMAND")

    t = tsub.add_parser(
        "train", help="learn merges from files, folders, globs or the built-in corpus",
        description="Train a tokenizer. With no INPUT, trains on the built-in corpus.",
        epilog="examples:\n  basegpt tokenizer train --vocab-size 4096 --out tok.json\n"
               "  basegpt tokenizer train 'docs/**/*.md' notes.txt --pattern gpt2 --out tok.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="UTF-8 text files, folders (recursive) or glob patterns")
    t.add_argument("--vocab-size", type=int, default=4096,
                   help="full vocabulary including special tokens (default 4096)")
    t.add_argument("--pattern", default=DEFAULT_PATTERN,
                   help=f"pre-split: {', '.join(BUILTIN_PATTERNS)} or a Python regex that "
                        f"matches every character (default {DEFAULT_PATTERN})")
    t.add_argument("--max-bytes", type=int, default=DEFAULT_BUILTIN_BYTES,
                   help="byte budget of the built-in corpus (default %(default)s)")
    t.add_argument("--backend", default="auto", choices=["auto", "c", "python", "reference"],
                   help="merge loop implementation (default auto: C if compiled)")
    t.add_argument("--out", type=Path, default=Path("tokenizer.json"),
                   help="where to write tokenizer.json (a .vocab file goes beside it)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(run=_run_tokenizer_train)

    e = tsub.add_parser("encode", help="print the token ids of a text",
                        epilog="example:\n  basegpt tokenizer encode --tokenizer tok.json 'Hello world'",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("text", nargs="?", help="text to encode (or use --file)")
    e.add_argument("--file", type=Path, help="encode this UTF-8 file instead")
    e.add_argument("--tokenizer", type=Path, default=Path("tokenizer.json"))
    e.add_argument("--allow-special", action="store_true",
                   help="turn special-token text such as <|endoftext|> into its id")
    e.add_argument("--show", action="store_true", help="also show each token's text")
    e.set_defaults(run=_run_tokenizer_encode)

    d = tsub.add_parser("decode", help="print the text of token ids",
                        epilog="example:\n  basegpt tokenizer decode --tokenizer tok.json 72 101 108",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("ids", nargs="+", type=int, metavar="ID")
    d.add_argument("--tokenizer", type=Path, default=Path("tokenizer.json"))
    d.add_argument("--strict", action="store_true", help="fail on invalid UTF-8 instead of "
                                                         "replacing it with U+FFFD")
    d.set_defaults(run=_run_tokenizer_decode)

    s = tsub.add_parser(
        "stats", help="bytes per token on held-out text, and a vocabulary preview",
        description="With no FILE, measures on the part of the built-in corpus that the "
                    "default training budget leaves out.",
        epilog="example:\n  basegpt tokenizer stats --tokenizer tok.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("files", nargs="*", metavar="FILE", help="held-out text files or folders")
    s.add_argument("--tokenizer", type=Path, default=Path("tokenizer.json"))
    s.add_argument("--top", type=int, default=10, help="tokens to show in the preview")
    s.set_defaults(run=_run_tokenizer_stats)


def _run_tokenizer_train(args: argparse.Namespace) -> None:
    tokenizer = Tokenizer(vocab_size=args.vocab_size, pattern=args.pattern)
    vocab_path = args.out.with_suffix(".vocab")
    # Checked before training, not after minutes of it.
    if args.out.is_dir():
        raise ValueError(f"--out {args.out} is a folder; give the path of the file to write, "
                         f"e.g. --out {args.out / 'tokenizer.json'}")
    if vocab_path.is_dir():
        raise ValueError(f"--out {args.out} writes its .vocab file to {vocab_path}, but that is "
                         "a folder; choose another --out name")
    if args.inputs:
        sources = expand_paths(args.inputs)
        what = f"{len(sources)} file(s)"
        n_bytes = sum(p.stat().st_size for p in sources)
    else:
        sources = list(builtin_corpus(args.max_bytes))
        what = "the built-in corpus"
        n_bytes = sum(len(d.encode("utf-8")) for d in sources)
    _log(f"training a {args.vocab_size}-token tokenizer on {what} ({n_bytes / 1e6:.1f} MB), "
         f"pattern {tokenizer.splitter.name}")
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:   # shown as one line each, below
        warnings.simplefilter("always")
        tokenizer.train(sources, backend=args.backend, progress=not args.quiet)
    for warning in caught:
        _log(f"basegpt: warning: {warning.message}")
    seconds = time.perf_counter() - start
    tokenizer.save(args.out)
    tokenizer.save_vocab(vocab_path)
    print(f"trained {tokenizer} in {seconds:.1f} s")
    print(f"wrote {args.out} and {vocab_path}")
    sample = "def greet(name):\n    return f'Hello, {name}!'  # 你好 😀"
    ids = tokenizer.encode(sample)
    print(f"sample: {len(sample.encode())} bytes -> {len(ids)} tokens: "
          + "|".join(tokenizer.token_text(i) for i in ids))


def _run_tokenizer_encode(args: argparse.Namespace) -> None:
    if (args.text is None) == (args.file is None):
        raise ValueError("give either a TEXT argument or --file, not both or neither")
    from basegpt.corpus import read_text_file
    text = args.text if args.file is None else read_text_file(args.file)
    tokenizer = Tokenizer.load(args.tokenizer)
    ids = tokenizer.encode(text, allowed_special="all" if args.allow_special else ())
    print(" ".join(map(str, ids)))
    if args.show:
        print("|".join(tokenizer.token_text(i) for i in ids))


def _run_tokenizer_decode(args: argparse.Namespace) -> None:
    tokenizer = Tokenizer.load(args.tokenizer)
    print(tokenizer.decode(args.ids, errors="strict" if args.strict else "replace"))


def _run_tokenizer_stats(args: argparse.Namespace) -> None:
    tokenizer = Tokenizer.load(args.tokenizer)
    if args.files:
        from basegpt.corpus import read_text_file
        texts = [read_text_file(p) for p in expand_paths(args.files)]
        what = f"{len(texts)} file(s)"
    else:
        texts = list(builtin_corpus(None, skip_bytes=DEFAULT_BUILTIN_BYTES))
        what = "held-out built-in corpus"
    if not texts:
        raise ValueError("no held-out text: pass FILE arguments to measure on")
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_tokens = sum(len(ids) for ids in tokenizer.encode_batch(texts))
    print(f"tokenizer: {tokenizer}  hash {tokenizer.hash[:12]}")
    print(f"{what}: {n_bytes:,} bytes -> {n_tokens:,} tokens = "
          f"{n_bytes / max(n_tokens, 1):.3f} bytes per token")
    public = tokenizer.token_ids or range(len(tokenizer))      # an imported tokenizer renumbers
    merge_ids = [public[256 + i] for i in range(len(tokenizer.merges))]
    top = max(0, min(args.top, len(merge_ids)))
    for title, ids in (("first merges", merge_ids[:top]),
                       ("last merges", merge_ids[len(merge_ids) - top:]),
                       ("longest tokens", sorted(merge_ids,
                                                 key=lambda i: -len(tokenizer.vocab[i]))[:top])):
        shown = "  ".join(f"'{tokenizer.token_text(i)}'" for i in ids)
        print(f"{title}: {shown}")


# ------------------------------------------------------------------------ prepare

def _add_prepare(sub: argparse._SubParsersAction) -> None:
    from basegpt.data.datasets import DATASETS, DEFAULT_DATASET
    from basegpt.data.pipeline import DEFAULT_SHARD_TOKENS, DEFAULT_VAL_FRACTION
    p = sub.add_parser(
        "prepare", help="tokenize a corpus into token shards for training",
        description="Tokenize files, folders, globs or a named dataset into token shards "
                    "(train_*.bin, val_*.bin) plus meta.json and tokenizer.json in --out. "
                    "With no INPUT, uses --data (default: the built-in corpus).",
        epilog="examples:\n  basegpt prepare --tokenizer tok.json --out data/stdlib\n"
               "  basegpt prepare --data shakespeare --tokenizer tok.json --out data/shakespeare\n"
               "  basegpt prepare 'books/**/*.txt' --tokenizer tok.json --out data/books",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="UTF-8 text files, folders (recursive) or glob patterns; one file = "
                        "one document")
    p.add_argument("--data", choices=sorted(DATASETS),
                   help=f"named dataset to use when no INPUT is given (default {DEFAULT_DATASET})")
    p.add_argument("--tokenizer", type=Path, default=Path("tokenizer.json"))
    p.add_argument("--out", type=Path, required=True, help="output folder for the shards")
    p.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION,
                   help="share of documents held out for validation (default %(default)s)")
    p.add_argument("--workers", type=int, default=None,
                   help="encoding processes (default: CPU cores, one per 32 MB of text)")
    p.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS,
                   help="most tokens per shard file (default %(default)s)")
    p.add_argument("--max-bytes", type=int, default=DEFAULT_BUILTIN_BYTES,
                   help="byte budget of the built-in corpus (default %(default)s)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="where named datasets are downloaded (default $BASEGPT_CACHE, "
                        "$XDG_CACHE_HOME/basegpt or ~/.cache/basegpt)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_prepare)


def _run_prepare(args: argparse.Namespace) -> None:
    from basegpt.data.pipeline import prepare
    meta = prepare(args.inputs or None, args.tokenizer, args.out, data=args.data,
                   val_fraction=args.val_fraction, workers=args.workers,
                   shard_tokens=args.shard_tokens, max_bytes=args.max_bytes,
                   cache_dir=args.cache_dir, progress=not args.quiet)
    n_shards = sum(len(shards) for shards in meta["shards"].values())
    print(f"prepared {', '.join(meta['inputs'])}: {meta['bytes'] / 1e6:.1f} MB -> "
          f"{meta['tokens']['train']:,} train tokens ({meta['documents']['train']} documents) "
          f"+ {meta['tokens']['val']:,} val tokens ({meta['documents']['val']} documents), "
          f"{meta['dtype']}, {n_shards} shards, in {meta['seconds']:.1f} s "
          f"({meta['bytes'] / 1e6 / max(meta['seconds'], 1e-9):.1f} MB/s, "
          f"{meta['workers']} workers) -> {args.out}")


# ------------------------------------------------------------------------ train, plot, config

def _flag_type(annotation: str):
    """The argparse type for a dataclass field's annotation (they are strings here)."""
    if "bool" in annotation:
        return None
    if "int" in annotation and "float" not in annotation:
        return int
    if "float" in annotation:
        return float
    return str


_FLAG_NAMES = {"data.source": "--data"}   # `--data shakespeare` reads better than --source


def _add_fields(parser: argparse.ArgumentParser, cls: type, section: str,
                skip: tuple[str, ...] = ()) -> None:
    """One --flag per dataclass field; the dataclass stays the only home of defaults."""
    import dataclasses
    group = parser.add_argument_group(f"{section} settings (override preset and --config)")
    for f in dataclasses.fields(cls):
        if f.name in skip or f.name in ("blocks", "inputs"):
            continue
        dest = f"{section}.{f.name}"
        flag = _FLAG_NAMES.get(dest, "--" + f.name.replace("_", "-"))
        default = f.default if f.default is not dataclasses.MISSING else "see preset"
        kind = _flag_type(str(f.type))
        if kind is None:
            group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=f"(default {default})")
        else:
            group.add_argument(flag, dest=dest, type=kind, default=argparse.SUPPRESS,
                               metavar=f.name.upper(), help=f"(default {default})")


def _overrides(args: argparse.Namespace) -> dict[str, dict]:
    out: dict[str, dict] = {"model": {}, "train": {}, "data": {}}
    for dest, value in vars(args).items():
        if "." in dest:
            section, name = dest.split(".", 1)
            out[section][name] = value
    if getattr(args, "inputs", None):
        out["data"]["inputs"] = list(args.inputs)
    return out


def _add_spec_flags(p: argparse.ArgumentParser) -> None:
    from basegpt.config import ModelConfig
    from basegpt.config import DataConfig
    from basegpt.recipe import preset_names
    from basegpt.config import TrainConfig
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="text files, folders or globs to train on (default: data.source)")
    p.add_argument("--preset", choices=preset_names(), default=None,
                   help="named settings to start from (default laptop)")
    p.add_argument("--config", type=Path, help="a JSON or TOML file with model/train/data "
                                               "sections; overrides the preset")
    _add_fields(p, DataConfig, "data")
    _add_fields(p, ModelConfig, "model", skip=("vocab_size",))
    _add_fields(p, TrainConfig, "train")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a model (no arguments: the main job on the built-in corpus)",
        description="Train a tokenizer (cached), prepare the data (cached), train a model "
                    "into a run directory, and print a sample. Settings: --preset, then "
                    "--config FILE, then flags.",
        epilog="examples:\n  basegpt train                                  # the main job\n"
               "  basegpt train --preset seed --max-minutes 2 --out runs/seed\n"
               "  basegpt train --data shakespeare --n-block 6 --out runs/shakes\n"
               "  basegpt train --resume runs/laptop --max-minutes 5   # continue a run\n"
               "  torchrun --nproc_per_node=2 -m basegpt train --out runs/ddp",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None,
                   help="run directory (default runs/PRESET)")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                   help="continue this run from its latest checkpoint")
    p.add_argument("--init-from", type=Path, default=None, metavar="RUN_DIR",
                   help="fine-tune: start a new run (--out) from this run's weights, model and "
                        "tokenizer (an imported HF run, any run, or RUN/best), with a fresh "
                        "optimizer at step 0; data and training settings as usual, model "
                        "settings only dropout and kernels")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar or log")
    _add_spec_flags(p)
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
    if args.resume is not None:
        if args.preset or args.config or overrides["model"] or overrides["data"]:
            raise ValueError("--resume continues a run with its own model and data settings; "
                             "only training flags (e.g. --max-minutes, --max-steps) may change")
        out, spec = args.resume, {"train": overrides["train"]}
    else:
        spec = resolve_spec(args.preset, args.config, overrides, init_from=args.init_from)
        out = args.out or Path("runs") / (args.preset or DEFAULT_PRESET)
        _check_folder_path(out, "--out")        # before minutes of tokenizer training
    log = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr))
    result, model, tokenizer = train_run(spec, out, resume=args.resume is not None,
                                         init_from=args.init_from, overwrite=args.overwrite,
                                         progress=not args.quiet, log=log)
    from basegpt import distributed
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


def _check_folder_path(path: Path, flag: str) -> None:
    """A folder can be made at `path`: neither it nor a folder above it is an existing file."""
    blocker = file_in_the_way(path)
    if blocker is not None:
        raise ValueError(f"{flag} {path}: {blocker} is a file, but a run directory must go "
                         f"there; move it away or choose another {flag}")


def _add_plot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="draw loss curves of one or more runs into a PNG",
                       epilog="examples:\n  basegpt plot runs/laptop\n"
                              "  basegpt plot runs/a runs/b --out compare.png",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    p.add_argument("--out", type=Path, default=None,
                   help="PNG to write (default RUN_DIR/loss.png for one run, else compare.png)")
    p.set_defaults(run=_run_plot)


def _run_plot(args: argparse.Namespace) -> None:
    from basegpt.plot import plot_runs
    for run in args.runs:
        if not run.is_dir():
            raise FileNotFoundError(f"{run}: no such run directory")
    out = args.out or (args.runs[0] / "loss.png" if len(args.runs) == 1 else Path("compare.png"))
    print(f"wrote {plot_runs(args.runs, out)}")


def _add_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="show the merged settings of a preset, file and flags",
                       epilog="examples:\n  basegpt config show\n"
                              "  basegpt config show --preset seed --lr 0.003",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    csub = p.add_subparsers(dest="config_command", required=True, metavar="COMMAND",
                            parser_class=_Parser)
    show = csub.add_parser(
        "show", help="print the merged model/train/data settings as JSON",
        description="Print the settings `basegpt train` would use with the same --preset, "
                    "--config and flags, every field filled in, as JSON.",
        epilog="examples:\n  basegpt config show                       # the main job (laptop preset)\n"
               "  basegpt config show --preset seed --lr 0.003\n"
               "  basegpt config show --config my.json --max-steps 100",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_spec_flags(show)
    show.set_defaults(run=_run_config_show)


def _run_config_show(args: argparse.Namespace) -> None:
    import dataclasses
    from basegpt.recipe import check_spec, resolve_spec
    spec = resolve_spec(args.preset, args.config, _overrides(args))
    model, train, data = check_spec(spec)
    full = {"model": {k: v for k, v in model.to_dict().items() if k != "vocab_size"},
            "train": train.to_dict(), "data": dataclasses.asdict(data)}
    print(json.dumps(full, indent=2))


# ------------------------------------------------------------------------ eval, info, attention

def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="loss, perplexity and bits per byte of a run on a text or dataset",
        description="Score a run's model on held-out text. With no INPUT and no --text, uses "
                    "the run's own validation split (equal to its last val_loss).",
        epilog="examples:\n  basegpt eval runs/laptop\n"
               "  basegpt eval runs/laptop notes.txt 'docs/**/*.md'\n"
               "  basegpt eval runs/laptop --text 'def add(a, b):\\n    return a + b\\n'\n"
               "  basegpt eval runs/laptop data/stdlib --split val --max-tokens 100000",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="text files, folders, globs, or one folder made by `basegpt prepare`")
    p.add_argument("--text", help="score this text instead of files")
    p.add_argument("--split", choices=["train", "val"], default="val",
                   help="split of a prepared folder or of the run's data (default val)")
    p.add_argument("--max-tokens", type=int, default=None,
                   help="tokens to score (default: the run's eval_tokens)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="windows per forward pass (default: the run's batch_size)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (default auto)")
    p.add_argument("--json", action="store_true", help="print the scores as one JSON object")
    p.set_defaults(run=_run_eval)


def _run_eval(args: argparse.Namespace) -> None:
    from basegpt.insight import evaluate_run
    scores = evaluate_run(args.run_dir, args.inputs or None, text=args.text, split=args.split,
                          max_tokens=args.max_tokens, batch_size=args.batch_size,
                          device=args.device)
    if args.json:
        print(json.dumps(scores))
        return
    bpb = scores["bits_per_byte"]
    print(f"{args.run_dir} on {scores['source']}, {scores['tokens']:,} tokens: "
          f"loss {scores['loss']:.4f}, perplexity {scores['perplexity']:.2f}"
          + (f", bits per byte {bpb:.4f}" if bpb is not None else ""))


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="a run's config, parameters per component, progress, tokenizer",
                       epilog="examples:\n  basegpt info runs/laptop\n"
                              "  basegpt info runs/laptop --json",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--json", action="store_true", help="print everything as one JSON object")
    p.set_defaults(run=_run_info)


def _run_info(args: argparse.Namespace) -> None:
    from basegpt.insight import run_info
    info = run_info(args.run_dir)
    if args.json:
        print(json.dumps(info, indent=2))
        return
    m, params, prog, tok = info["model"], info["parameters"], info["progress"], info["tokenizer"]
    kv = f" ({m['n_kv_head']} kv)" if m["n_kv_head"] else ""
    print(f"run {info['run_dir']}")
    if info["init_from"]:
        print(f"fine-tuned from: {info['init_from']['path']}")
    print(f"model: {m['n_block']} block{'s' if m['n_block'] != 1 else ''} x {m['n_embed']} wide, "
          f"{m['n_head']} heads{kv} of "
          f"n_k {m['n_k']} / n_v {m['n_v']}, n_ff {m['n_ff']}, context {m['n_context']}, "
          f"vocab {m['vocab_size']}")
    print(f"       {m['norm_position']}-norm {m['norm']}, {m['positional']} positions, "
          f"{m['activation']}, attention {m['attention']}, bias {m['bias']}, "
          f"tied weights {m['tie_weights']}"
          + (f", {sum(1 for b in m['blocks'] if b)} block override(s)" if m["blocks"] else ""))
    print(f"parameters: {params['total']:,} ({params['without_embeddings']:,} without embeddings)")
    rows = [("embedding", params["embedding"])]
    if params["positional"]:
        rows.append(("positions", params["positional"]))
    for i, b in enumerate(params["blocks"]):
        rows.append((f"block {i}", f"{b['total']:,} = attention {b['attention']:,} + "
                                   f"feed-forward {b['feedforward']:,} + norms {b['norms']:,}"))
    if params["final_norm"]:
        rows.append(("final norm", params["final_norm"]))
    rows.append(("head", "tied to the embedding" if params["tied_head"] else params["head"]))
    for name, value in rows:
        print(f"  {name:<11} {value:,}" if isinstance(value, int) else f"  {name:<11} {value}")
    seconds = f", {prog['seconds']:.0f} s" if prog.get("seconds") is not None else ""
    print(f"trained: {prog['steps']:,} steps, {prog['tokens']:,} tokens{seconds}"
          + (f", last train loss {prog['train_loss']:.4f}" if prog.get("train_loss") is not None else ""))
    if "last_eval" in prog:
        e = prog["last_eval"]
        print(f"last eval (step {e['step']}): " + ", ".join(
            f"{k} {e[k]:.4f}" for k in ("val_loss", "val_ppl", "val_bpb") if k in e))
    best = info["best"]
    print("best validation: " + (f"val_loss {best['val_loss']:.4f} at step {best['step']}"
                                  if best else "none yet"))
    print(f"checkpoints kept: {', '.join(map(str, info['checkpoints'])) or 'none'}")
    print(f"tokenizer: {tok['size']:,} tokens ({tok['merges']:,} merges + "
          f"{len(tok['special_tokens'])} special), pattern {tok['pattern']}, hash "
          f"{tok['hash'][:12]} ({'matches the model' if tok['matches_model'] else 'DOES NOT match the model'})")


def _add_attention(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "attention", help="draw a prompt's attention weights as heatmaps",
        description="Run a prompt through a run's model and draw each head's attention "
                    "weights (rows: query token, columns: key token), one panel per head. "
                    "Default: every layer (one row of panels each) and every head. The "
                    "weights come from the readable manual kernel whatever the config uses.",
        epilog="examples:\n  basegpt attention runs/laptop --prompt 'def add(a, b):' --out attn.png\n"
               "  basegpt attention runs/laptop --prompt 'import os' --layer 0 --head 1 --out h1.png",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--prompt", required=True, help="the text to look at (at most n_context tokens)")
    p.add_argument("--layer", type=int, default=None, help="draw only this layer (0-based)")
    p.add_argument("--head", type=int, default=None, help="draw only this head (0-based)")
    p.add_argument("--out", type=Path, default=Path("attention.png"),
                   help="PNG to write (default attention.png)")
    p.set_defaults(run=_run_attention)


def _run_attention(args: argparse.Namespace) -> None:
    from basegpt.checkpoint import load_run
    from basegpt.insight import attention_maps, attention_summary, plot_attention
    run = load_run(args.run_dir)
    tokens, maps = attention_maps(run.model, run.tokenizer, args.prompt)
    out = plot_attention(tokens, maps, args.out, layer=args.layer, head=args.head,
                         title=f"{args.run_dir}: attention on {args.prompt!r}")
    print(f"tokens ({len(tokens)}): " + "|".join(tokens))
    print(f"the last token {tokens[-1]!r} attends most to:")
    for row in attention_summary(tokens, maps):
        if (args.layer is None or row["layer"] == args.layer) and \
                (args.head is None or row["head"] == args.head):
            print(f"  layer {row['layer']} head {row['head']}: {row['top_token']!r} "
                  f"({row['top_weight']:.2f}), entropy {row['entropy_bits']:.2f} of "
                  f"{row['uniform_bits']:.2f} bits")
    print(f"wrote {out}")


# ------------------------------------------------------------------------ generate

def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate", help="write text with a trained run's model (streams to the terminal)",
        description="Continue a prompt with a run's model. The prompt is printed, then the new "
                    "text as it is generated (in --interactive mode only the new text). With no --prompt / --prompt-file the model starts "
                    "a new document (from the end-of-text token). Past the model's context "
                    "the window slides (see basegpt/generate.py).",
        epilog="examples:\n  basegpt generate runs/laptop --prompt 'def fib(n):' --temperature 0.8\n"
               "  basegpt generate runs/laptop --prompt-file start.txt --top-p 0.9 --stop '\\n\\n'\n"
               "  basegpt generate runs/laptop --num-samples 3 --seed 0 --max-new-tokens 100\n"
               "  basegpt generate runs/laptop --interactive        (one prompt per line, Ctrl-D ends)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--prompt", help="text to continue")
    p.add_argument("--prompt-file", type=Path, help="continue the text of this UTF-8 file")
    p.add_argument("--max-new-tokens", type=int, default=256, help="default %(default)s")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="0 = greedy, 1 = the model's distribution (default %(default)s)")
    p.add_argument("--top-k", type=int, help="sample from the k most likely tokens only")
    p.add_argument("--top-p", type=float, help="nucleus: the most likely tokens with mass >= p")
    p.add_argument("--min-p", type=float, help="drop tokens below min_p x the top probability")
    p.add_argument("--repetition-penalty", type=float,
                   help="> 1 makes tokens already in the text less likely (CTRL)")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="stop at this text (repeatable; '\\n' and '\\t' are unescaped)")
    p.add_argument("--seed", type=int, help="same seed, same text (sample i uses seed + i)")
    p.add_argument("--num-samples", type=int, default=1, help="samples per prompt (default 1)")
    p.add_argument("--stream", action=argparse.BooleanOptionalAction, default=True,
                   help="print the text as it is generated (default); --no-stream prints each "
                        "sample when it is complete")
    p.add_argument("--interactive", action="store_true",
                   help="read prompts from stdin, one per line, until EOF (Ctrl-D); not with "
                        "--prompt / --prompt-file")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (default auto)")
    p.set_defaults(run=_run_generate)


def _run_generate(args: argparse.Namespace) -> None:
    from basegpt.checkpoint import load_run
    from basegpt.devices import pick_device
    from basegpt.generate import stream
    from basegpt.sampling import SamplingSettings
    if args.prompt is not None and args.prompt_file is not None:
        raise ValueError("give --prompt or --prompt-file, not both")
    if args.interactive and (args.prompt is not None or args.prompt_file is not None):
        raise ValueError("--interactive reads its prompts from stdin; drop --prompt / "
                         "--prompt-file, or drop --interactive to continue that one prompt")
    if args.num_samples < 1:
        raise ValueError(f"--num-samples={args.num_samples}: must be >= 1")
    # Checked before anything is loaded or printed, so a bad flag never follows the prompt.
    SamplingSettings.of(args.temperature, args.top_k, args.top_p, args.min_p,
                        args.repetition_penalty)
    prompt = args.prompt or ""
    if args.prompt_file is not None:
        from basegpt.corpus import read_text_file
        prompt = read_text_file(args.prompt_file)
    run = load_run(args.run_dir, device=pick_device(args.device))
    stops = [s.replace("\\n", "\n").replace("\\t", "\t") for s in args.stop]
    options = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                   top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                   repetition_penalty=args.repetition_penalty, stop=stops or None)

    def samples(text: str, echo: bool) -> None:
        for i in range(args.num_samples):
            seed = None if args.seed is None else args.seed + i
            # stream() checks every argument when called: still nothing printed on an error.
            pieces = stream(run.model, run.tokenizer, text, seed=seed, **options)
            if args.num_samples > 1:
                print(f"=== sample {i + 1} of {args.num_samples} ===")
            if echo:
                print(text, end="", flush=True)
            if args.stream:
                for piece in pieces:
                    print(piece, end="", flush=True)
            else:
                print("".join(pieces), end="")          # == generate(...) (stream's contract)
            print(flush=True)

    if not args.interactive:
        samples(prompt, echo=True)
        return
    _log(f"loaded {args.run_dir}: type a prompt and press Enter; Ctrl-D to leave")
    for line in sys.stdin:
        line = line.rstrip("\n")
        if line:
            samples(line, echo=False)


# ------------------------------------------------------------------------ export, import

def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a run to Hugging Face GPT-2 or tiktoken format",
        description="Write a run's model and tokenizer in another ecosystem's format. "
                    "--format hf: a directory that transformers loads offline "
                    "(GPT2LMHeadModel / AutoTokenizer .from_pretrained), for GPT-2-compatible "
                    "models (e.g. the gpt2-small preset). --format tiktoken: the tokenizer "
                    "as a .tiktoken rank file plus a JSON with its pattern and special tokens.",
        epilog="examples:\n  basegpt export runs/gpt2 --format hf hf/gpt2\n"
               "  basegpt export runs/gpt2 --format tiktoken hf/gpt2.tiktoken",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("out", type=Path, metavar="OUT",
                   help="output directory (hf), or .tiktoken file or directory (tiktoken)")
    p.add_argument("--format", required=True, choices=["hf", "tiktoken"])
    p.set_defaults(run=_run_export)


def _run_export(args: argparse.Namespace) -> None:
    from basegpt.interop.hf_gpt2 import export_hf, export_tiktoken
    if args.format == "hf":
        out = export_hf(args.run_dir, args.out)
        print(f"wrote {out}/: config.json, model.safetensors, tokenizer.json, "
              f"tokenizer_config.json (load with GPT2LMHeadModel.from_pretrained({str(out)!r}))")
    else:
        ranks, meta = export_tiktoken(args.run_dir, args.out)
        print(f"wrote {ranks} and {meta} (load with "
              f"basegpt.interop.tokenizers.load_tiktoken({str(ranks)!r}))")


def _add_import(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="build a run directory from a Hugging Face GPT-2 directory",
                       description="Import a model and tokenizer from another format into a "
                                   "basegpt run directory. Local files only; never downloads.",
                       epilog="examples:\n  basegpt import hf hf/tiny-gpt2 runs/tiny-gpt2-again\n"
                              "  basegpt generate runs/tiny-gpt2-again --prompt 'def '\n"
                              "  basegpt import hf --help     (the flags)",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    isub = p.add_subparsers(dest="import_format", required=True, metavar="FORMAT",
                            parser_class=_Parser)
    h = isub.add_parser(
        "hf", help="a local GPT-2-format directory (config.json, model.safetensors, "
                   "tokenizer.json or vocab.json + merges.txt)",
        epilog="example:\n  basegpt import hf hf/gpt2 runs/gpt2\n  basegpt generate runs/gpt2",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    h.add_argument("hf_dir", type=Path, metavar="HF_DIR")
    h.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    h.add_argument("--allow-pickle", action="store_true",
                   help="also read a legacy pytorch_model.bin (a pickle; torch.load with "
                        "weights_only=True). Only for files you trust")
    h.add_argument("--overwrite", action="store_true", help="replace a run already in RUN_DIR")
    h.set_defaults(run=_run_import_hf)


def _run_import_hf(args: argparse.Namespace) -> None:
    from basegpt.interop.hf_gpt2 import PICKLE_RISK, import_hf
    result = import_hf(args.hf_dir, args.run_dir, allow_pickle=args.allow_pickle,
                       overwrite=args.overwrite)
    if result.pickled:
        _log(f"warning: read {result.weights} because of --allow-pickle; {PICKLE_RISK}. "
             "Prefer model.safetensors: `basegpt export RUN_DIR --format hf OUT` writes one.")
    print(f"imported {args.hf_dir} ({result.weights.name}) -> {result.run_dir}; "
          "its tokenizer gives the same token ids as HF's")


# ------------------------------------------------------------------------ main

def build_parser() -> argparse.ArgumentParser:
    """The full `basegpt` argument parser."""
    parser = _Parser(
        prog="basegpt", description="A GPT from first principles.",
        epilog="examples:\n  basegpt train                  # the main job: a small GPT in a few minutes\n"
               "  basegpt generate runs/laptop --prompt 'def '\n"
               "  basegpt eval runs/laptop\n"
               "  basegpt info runs/laptop\n"
               "  basegpt plot runs/laptop\n"
               "  basegpt attention runs/laptop --prompt 'def add(a, b):' --out attn.png\n"
               "  basegpt COMMAND --help         # each command's flags and examples",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)
    _add_tokenizer(sub)
    _add_corpus(sub)
    _add_generate(sub)
    _add_prepare(sub)
    _add_train(sub)
    _add_plot(sub)
    _add_config(sub)
    _add_eval(sub)
    _add_info(sub)
    _add_attention(sub)
    _add_export(sub)
    _add_import(sub)
    return parser


def _error_line(error: Exception) -> str:
    """The one line a user error prints. Python's own path errors ("[Errno 17] File exists:
    'runs'") are reworded to name the path, what is wrong with it and the fix."""
    # os.replace(tmp, target), as every atomic write ends, names the target second.
    path = getattr(error, "filename2", None) or getattr(error, "filename", None)
    if isinstance(error, FileExistsError) and path:
        return f"{path} is a file, but a folder must go there; move it away or choose another path"
    if isinstance(error, NotADirectoryError) and path:
        return (f"{path}: part of this path is a file, but it must be a folder; move that file "
                "away or choose another path")
    if isinstance(error, IsADirectoryError) and path:
        return f"{path} is a folder, but a file must go there; give a file path"
    text = str(error)
    return text.splitlines()[0] if text else type(error).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
        code = args.run(args)
    except USER_ERRORS as error:
        print(f"basegpt: error: {_error_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("basegpt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`basegpt ... | head`): not an error of ours. Point stdout at
        # devnull so the interpreter's final flush does not raise again.
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code or 0


if __name__ == "__main__":
    raise SystemExit(main())
