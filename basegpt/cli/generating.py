"""`basegpt generate`: one-shot, several samples, streaming or an interactive prompt loop."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from basegpt.cli._common import _log, add_field_flags, field_values


# ------------------------------------------------------------------------ generate

def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate", help="write text with a trained run's model (streams to the terminal)",
        description="Continue a prompt with a run's model. The prompt is printed, then the new "
                    "text as it is generated (in --interactive mode: each prompt after '> ', "
                    "the new text below it, a blank line between answers). With no --prompt "
                    "/ --prompt-file the model starts "
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
    p.add_argument("--num-samples", type=int, default=1,
                   help="samples per prompt (default 1); sample i uses --seed + i")
    p.add_argument("--stream", action=argparse.BooleanOptionalAction, default=True,
                   help="print the text as it is generated (default); --no-stream prints each "
                        "sample when it is complete")
    p.add_argument("--interactive", action="store_true",
                   help="read prompts from stdin, one per line, until EOF (Ctrl-D); not with "
                        "--prompt / --prompt-file")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (default auto)")
    from basegpt.config import GenerationConfig         # (basegpt.generate would import torch)
    group = add_field_flags(p, GenerationConfig, "generation", skip=("stop",),
                            title="generation settings (the fields of GenerationConfig)")
    group.add_argument("--stop", action="append", type=_unescape, dest="generation.stop",
                       default=argparse.SUPPRESS, metavar="TEXT",
                       help="stop at this text (repeatable; '\\n' and '\\t' are unescaped)")
    p.set_defaults(run=_run_generate)


def _unescape(text: str) -> str:
    """A --stop value as typed in a shell: '\\n' -> newline, '\\t' -> tab."""
    return text.replace("\\n", "\n").replace("\\t", "\t")


def _run_generate(args: argparse.Namespace) -> None:
    import dataclasses
    from basegpt.checkpoint import load_run
    from basegpt.devices import pick_device
    from basegpt.config import GenerationConfig
    from basegpt.generate import stream
    if args.prompt is not None and args.prompt_file is not None:
        raise ValueError("give --prompt or --prompt-file, not both")
    if args.interactive and (args.prompt is not None or args.prompt_file is not None):
        raise ValueError("--interactive reads its prompts from stdin; drop --prompt / "
                         "--prompt-file, or drop --interactive to continue that one prompt")
    if args.num_samples < 1:
        raise ValueError(f"--num-samples={args.num_samples}: must be >= 1")
    # Built (and so checked) before anything is loaded or printed: a bad flag never follows
    # the prompt.
    config = GenerationConfig(**field_values(args, "generation"))
    prompt = args.prompt or ""
    if args.prompt_file is not None:
        from basegpt.corpus import read_text_file
        prompt = read_text_file(args.prompt_file)
    run = load_run(args.run_dir, device=pick_device(args.device))

    def samples(text: str, echo: bool) -> None:
        for i in range(args.num_samples):
            seed = None if config.seed is None else config.seed + i
            # stream() checks the rest (prompt, stop ids) when called: still nothing printed.
            pieces = stream(run.model, run.tokenizer, text,
                            config=dataclasses.replace(config, seed=seed))
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
    _prompt_loop(lambda line: samples(line, echo=False))


PROMPT_MARKER = "> "
"""Starts each prompt line of `generate --interactive`, as a transcript shows it."""


def _prompt_loop(answer: Callable[[str], None]) -> None:
    """Read prompts from stdin, one a line, until EOF, and `answer` each non-empty one.

    The output reads as a transcript: each prompt after PROMPT_MARKER, its answer below it,
    and a blank line between one answer and the next prompt. At a terminal the marker is
    printed before reading (the terminal echoes what is typed); from a pipe or a file the
    prompt is printed after the marker, since nothing echoes it.
    """
    at_terminal = sys.stdin.isatty()
    answered = False
    while True:
        if at_terminal:
            print(("\n" if answered else "") + PROMPT_MARKER, end="", flush=True)
        line = sys.stdin.readline()
        if not line:                               # EOF (Ctrl-D)
            if at_terminal:
                print()                            # the shell's prompt on a line of its own
            return
        line = line.rstrip("\n")
        if not line:
            if at_terminal:
                answered = False           # the echoed empty line already separates
            continue
        if not at_terminal:
            print(("\n" if answered else "") + PROMPT_MARKER + line, flush=True)
        answer(line)
        answered = True
