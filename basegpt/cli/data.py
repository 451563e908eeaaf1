"""`basegpt corpus`, `basegpt tokenizer ...` and `basegpt prepare`: text in, tokenizer and shards out."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from basegpt._io import check_writable, new_folder, staged
from basegpt.cli._common import _log
from basegpt.corpus import DEFAULT_BUILTIN_BYTES, builtin_corpus, builtin_corpus_files, \
    expand_paths, stdlib_root, text_files
from basegpt.tokenizer import BUILTIN_PATTERNS, DEFAULT_PATTERN, Tokenizer


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
    check_writable(args.out)                  # before training, not after
    if args.inputs:
        sources = text_files(args.inputs)
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
    # Both files or neither: a full disk part-way leaves an earlier pair as it was.
    with new_folder(args.out.parent), staged(args.out.parent) as stage:
        tokenizer.save(stage / args.out.name)
        tokenizer.save_vocab(stage / vocab_path.name)
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
    from basegpt.config import DEFAULT_VAL_FRACTION
    from basegpt.data.pipeline import DEFAULT_SHARD_TOKENS
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
