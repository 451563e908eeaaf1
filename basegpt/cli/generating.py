"""`basegpt generate`: one-shot, several samples, streaming or an interactive prompt loop."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from basegpt.cli._common import _log


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
    p.add_argument("--fast-step", action=argparse.BooleanOptionalAction, default=True,
                   help="one-token steps on DecodeStep (default; the same logits to float "
                        "rounding); --no-fast-step runs every step through the model's forward")
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
                   repetition_penalty=args.repetition_penalty, stop=stops or None,
                   fast_step=args.fast_step)

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
