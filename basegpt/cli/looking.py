"""`basegpt eval`, `basegpt info` and `basegpt attention`: what a trained run knows and holds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path



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
