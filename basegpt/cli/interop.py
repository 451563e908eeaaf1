"""`basegpt export` and `basegpt import`: runs to and from Hugging Face (GPT-2 and Llama)
and tiktoken."""

from __future__ import annotations

import argparse
from pathlib import Path

from basegpt.cli._common import _Parser, _log

_LOADERS = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}
_NAMES = {"gpt2": "GPT-2", "llama": "Llama"}


# ------------------------------------------------------------------------ export, import

def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a run to Hugging Face (GPT-2 or Llama), GGUF or tiktoken format",
        description="Write a run's model and tokenizer in another ecosystem's format: a "
                    "directory that transformers\nloads offline with no custom code "
                    "(AutoTokenizer and the model class .from_pretrained), one\nfile that "
                    "llama.cpp runs, or a tiktoken rank file.\n"
                    "  --format hf        GPT-2 (GPT2LMHeadModel), for GPT-2-compatible models: "
                    "pre-norm LayerNorm,\n"
                    "                     learned positions, GELU, biases (e.g. the gpt2-small "
                    "preset)\n"
                    "  --format llama     Llama (LlamaForCausalLM), for Llama-compatible models: "
                    "pre-norm RMSNorm,\n"
                    "                     RoPE, SwiGLU, n_k == n_v (e.g. the laptop preset, the main job)\n"
                    "  --format auto      GPT-2 if the model is GPT-2-compatible, else Llama; "
                    "a model neither\n"
                    "                     expresses is an error naming each setting to change "
                    "and the preset to train\n"
                    "  --format gguf      one GGUF file for llama.cpp (its gpt2 or llama "
                    "architecture, as the\n"
                    "                     model allows), with the tokenizer; --dtype f32 or f16\n"
                    "  --format tiktoken  the tokenizer only, as a .tiktoken rank file plus a "
                    "JSON with its\n"
                    "                     pattern and special tokens",
        epilog="examples:\n  basegpt export runs/gpt2 --format hf hf/gpt2\n"
               "  basegpt export runs/laptop --format llama hf/laptop\n"
               "  basegpt export runs/mine --format auto hf/mine\n"
               "  basegpt export runs/laptop --format gguf laptop.gguf --dtype f16\n"
               "  basegpt export runs/gpt2 --format tiktoken hf/gpt2.tiktoken",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("out", type=Path, metavar="OUT",
                   help="output directory (hf, llama, auto), .gguf file (gguf), or .tiktoken "
                        "file or directory (tiktoken)")
    p.add_argument("--format", required=True, choices=["hf", "llama", "auto", "gguf", "tiktoken"],
                   help="hf = Hugging Face GPT-2; llama = Hugging Face Llama; auto = GPT-2 "
                        "when the model allows it, else Llama; gguf = llama.cpp's file; "
                        "tiktoken = the tokenizer only")
    p.add_argument("--dtype", choices=["f32", "f16"],
                   help="gguf only: f32 (default) or f16 matrices (norms and biases stay f32)")
    p.set_defaults(run=_run_export)


def _run_export(args: argparse.Namespace) -> None:
    from basegpt.interop.hf import export_auto, export_hf, export_llama, export_tiktoken
    if args.dtype is not None and args.format != "gguf":
        raise ValueError(f"--dtype is for --format gguf only, not {args.format}; drop --dtype")
    if args.format == "gguf":
        from basegpt.interop.gguf import export_gguf
        out = export_gguf(args.run_dir, args.out, dtype=args.dtype or "f32")
        print(f"wrote {out} ({args.dtype or 'f32'}; run it with llama.cpp: llama-cli -m {out})")
        return
    if args.format == "tiktoken":
        ranks, meta = export_tiktoken(args.run_dir, args.out)
        print(f"wrote {ranks} and {meta} (load with "
              f"basegpt.interop.tokenizers.load_tiktoken({str(ranks)!r}))")
        return
    if args.format == "auto":
        out, architecture = export_auto(args.run_dir, args.out)
    elif args.format == "llama":
        out, architecture = export_llama(args.run_dir, args.out), "llama"
    else:
        out, architecture = export_hf(args.run_dir, args.out), "gpt2"
    print(f"wrote {out}/ in {_NAMES[architecture]} format: config.json, model.safetensors, "
          f"tokenizer.json, tokenizer_config.json (load with "
          f"{_LOADERS[architecture]}.from_pretrained({str(out)!r}))")


def _add_import(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="build a run directory from a Hugging Face GPT-2 or "
                                      "Llama directory",
                       description="Import a model and tokenizer from another format into a "
                                   "basegpt run directory. Local files only; never downloads.",
                       epilog="examples:\n  basegpt import hf hf/tiny-gpt2 runs/tiny-gpt2-again\n"
                              "  basegpt generate runs/tiny-gpt2-again --prompt 'def '\n"
                              "  basegpt import hf --help     (the flags)",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    isub = p.add_subparsers(dest="import_format", required=True, metavar="FORMAT",
                            parser_class=_Parser)
    h = isub.add_parser(
        "hf", help="a local GPT-2- or Llama-format directory (config.json, "
                   "model.safetensors, tokenizer.json or vocab.json + merges.txt)",
        description="Build a run directory from a local Hugging Face directory: GPT-2 "
                    "(GPT2LMHeadModel) or Llama\n(LlamaForCausalLM), by config.json's "
                    "model_type. Weights from safetensors only, unless --allow-pickle;\n"
                    "nothing is downloaded. The run's tokenizer gives HF's token ids.",
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
    from basegpt.interop.hf_files import PICKLE_RISK
    from basegpt.interop.hf import import_hf
    result = import_hf(args.hf_dir, args.run_dir, allow_pickle=args.allow_pickle,
                       overwrite=args.overwrite)
    if result.pickled:
        _log(f"warning: read {result.weights} because of --allow-pickle; {PICKLE_RISK}. "
             "Prefer model.safetensors: `basegpt export RUN_DIR --format hf OUT` writes one.")
    print(f"imported {args.hf_dir} ({_NAMES[result.architecture]}, {result.weights.name}) "
          f"-> {result.run_dir}; its tokenizer gives the same token ids as HF's")
