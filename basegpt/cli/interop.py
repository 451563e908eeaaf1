"""`basegpt export` and `basegpt import`: runs to and from Hugging Face GPT-2 and tiktoken."""

from __future__ import annotations

import argparse
from pathlib import Path

from basegpt.cli._common import _Parser, _log


# ------------------------------------------------------------------------ export, import

def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a run to Hugging Face GPT-2 or tiktoken format",
        description="Write a run's model and tokenizer in another ecosystem's format. "
                    "--format hf: a directory that transformers loads offline "
                    "(GPT2LMHeadModel / AutoTokenizer .from_pretrained), for GPT-2-compatible "
                    "models (e.g. the gpt2-small preset). --format tiktoken: the tokenizer "
                    "as a .tiktoken rank file plus a JSON with its pattern and special tokens. "
                    "--format gguf: one file that llama.cpp runs, for GPT-2-compatible models "
                    "and pre-norm RMSNorm + RoPE + SwiGLU models without biases.",
        epilog="examples:\n  basegpt export runs/gpt2 --format hf hf/gpt2\n"
               "  basegpt export runs/gpt2 --format tiktoken hf/gpt2.tiktoken\n"
               "  basegpt export runs/gpt2 --format gguf gpt2.gguf --dtype f16",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("out", type=Path, metavar="OUT",
                   help="output directory (hf), .tiktoken file or directory (tiktoken), "
                        ".gguf file (gguf)")
    p.add_argument("--format", required=True, choices=["hf", "tiktoken", "gguf"])
    p.add_argument("--dtype", choices=["f32", "f16"],
                   help="gguf only: f32 (default) or f16 matrices (norms and biases stay f32)")
    p.set_defaults(run=_run_export)


def _run_export(args: argparse.Namespace) -> None:
    from basegpt.interop.hf_gpt2 import export_hf, export_tiktoken
    if args.dtype is not None and args.format != "gguf":
        raise ValueError(f"--dtype is for --format gguf only, not {args.format}; drop --dtype")
    if args.format == "gguf":
        from basegpt.interop.gguf import export_gguf
        out = export_gguf(args.run_dir, args.out, dtype=args.dtype or "f32")
        print(f"wrote {out} ({args.dtype or 'f32'}; run it with llama.cpp: llama-cli -m {out})")
    elif args.format == "hf":
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
