"""The `basegpt` command line. Only this package parses argv, prints results and exits.

Each subcommand is a pair: `_add_<name>(subparsers)` declares its flags, `_run_<name>(args)`
calls the library and prints. One module per group of subcommands:

    data.py        corpus, tokenizer train/encode/decode/stats, prepare
    training.py    train, plot, config show (and the flags derived from the settings dataclasses)
    comparing.py   compare (the ablation lab)
    looking.py     eval, info, attention
    generating.py  generate
    interop.py     export, import
    serving.py     serve (an OpenAI-compatible HTTP API; needs the serve extra)
    _common.py     the parser class, which errors are the user's, logging

This file assembles the parser and runs it. Results go to stdout, logs and progress to stderr.
Exit codes: 0 success, 2 user error (one line on stderr, no traceback), 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM). A full disk, a read-only file system or a folder
without write permission is a user error too: the line names the file, the cause and
the fix. A traceback therefore always means a bug in basegpt (or an I/O error of the
disk itself).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import warnings
from collections.abc import Sequence

from basegpt.cli._common import PATH_ERRNOS, USER_ERRORS, _log, _Parser
from basegpt.cli.comparing import _add_compare
from basegpt.cli.data import _add_corpus, _add_prepare, _add_tokenizer
from basegpt.cli.generating import _add_generate
from basegpt.cli.interop import _add_export, _add_import
from basegpt.cli.looking import _add_attention, _add_eval, _add_info
from basegpt.cli.serving import _add_serve
from basegpt.cli.training import _add_config, _add_plot, _add_train


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The full `basegpt` argument parser. `argv` (default sys.argv[1:]) is only looked at
    for `--preset NAME`, whose values the help of `train` and `config show` then shows: the
    values the command would use."""
    parser = _Parser(
        prog="basegpt", description="A GPT from first principles.",
        epilog="examples:\n  basegpt train                  # the main job: a small GPT in a few minutes\n"
               "  basegpt generate runs/laptop --prompt 'def '\n"
               "  basegpt eval runs/laptop\n"
               "  basegpt info runs/laptop\n"
               "  basegpt plot runs/laptop\n"
               "  basegpt compare --preset seed --vary positional=sinusoidal,rope --seeds 3\n"
               "  basegpt attention runs/laptop --prompt 'def add(a, b):' --out attn.png\n"
               "  basegpt serve runs/laptop      # an OpenAI-compatible API on localhost:8000\n"
               "  basegpt COMMAND --help         # each command's flags and examples",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    from basegpt import __version__
    parser.add_argument("--version", action="version", version=f"basegpt {__version__}",
                        help="print basegpt's version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)
    _add_tokenizer(sub)
    _add_corpus(sub)
    _add_generate(sub)
    _add_prepare(sub)
    preset = _preset_named(sys.argv[1:] if argv is None else argv)
    _add_train(sub, preset)
    _add_compare(sub, preset)
    _add_plot(sub)
    _add_config(sub, preset)
    _add_eval(sub)
    _add_info(sub)
    _add_attention(sub)
    _add_export(sub)
    _add_import(sub)
    _add_serve(sub)
    return parser


def _preset_named(argv: Sequence[str]) -> str:
    """The preset `--preset NAME` (or `--preset=NAME`) in argv names, if it is one; else the
    default preset (a bad name is the parser's to report)."""
    from basegpt.recipe import DEFAULT_PRESET, preset_names
    argv = list(argv)
    for i, arg in enumerate(argv):
        name = (argv[i + 1] if arg == "--preset" and i + 1 < len(argv)
                else arg.partition("=")[2] if arg.startswith("--preset=") else None)
        if name in preset_names():
            return name
    return DEFAULT_PRESET


def _error_line(error: Exception) -> str:
    """The one line a user error prints. Python's own path errors ("[Errno 17] File exists:
    'runs'", "[Errno 28] No space left on device") are reworded to name the path, what is
    wrong with it and the fix."""
    # os.replace(tmp, target), as every atomic write ends, names the target second.
    path = getattr(error, "filename2", None) or getattr(error, "filename", None)
    if isinstance(error, FileExistsError) and path:
        return f"{path} is a file, but a folder must go there; move it away or choose another path"
    if isinstance(error, NotADirectoryError) and path:
        return (f"{path}: part of this path is a file, but it must be a folder; move that file "
                "away or choose another path")
    if isinstance(error, IsADirectoryError) and path:
        return f"{path} is a folder, but a file must go there; give a file path"
    if isinstance(error, OSError) and error.errno in PATH_ERRNOS:
        what, fix = PATH_ERRNOS[error.errno]
        elsewhere = ("set BASEGPT_CACHE to a folder elsewhere" if path and _in_cache(path)
                     else "choose another path")
        fix = fix.format(elsewhere=elsewhere)
        return f"{path}: {what}; {fix}" if path else f"{what}; {fix}"
    text = str(error)
    return text.splitlines()[0] if text else type(error).__name__


class _Terminated(BaseException):
    """SIGTERM arrived outside training (which saves and stops on it by itself)."""


def _terminate(signum: int, frame: object) -> None:
    raise _Terminated


def _in_cache(path: str) -> bool:
    """Whether `path` is in basegpt's cache (tokenizers, shards, downloads), where the fix for
    a full or read-only disk is another cache folder, not another --out."""
    from pathlib import Path
    from basegpt.data.datasets import cache_dir
    return Path(path).absolute().is_relative_to(cache_dir().absolute())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    # SIGTERM (a scheduler, torchrun, `kill`) ends the command the way Ctrl-C does: the
    # exception unwinds, so atomic writes drop their temporary files and locks are released,
    # instead of the process vanishing with no word. fit() takes SIGTERM over while it trains.
    previous = _on_sigterm(_terminate)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            args = build_parser(argv).parse_args(argv)
            # The command line as typed, for the commands that record it (compare).
            args.argv = list(sys.argv[1:] if argv is None else argv)
            code = args.run(args)
    except USER_ERRORS as error:
        print(f"basegpt: error: {_error_line(error)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`basegpt ... | head`): not an error of ours. Point stdout at
        # devnull so the interpreter's final flush does not raise again. (Before the OSError
        # clause below, of which it is a case.)
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as error:
        if error.errno not in PATH_ERRNOS:
            raise
        print(f"basegpt: error: {_error_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("basegpt: interrupted", file=sys.stderr)
        return 130
    except _Terminated:
        print("basegpt: terminated (SIGTERM); what was saved before it is intact",
              file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        _on_sigterm(previous)
    return code or 0


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: object = None, line: str | None = None) -> None:
    """A warning as the command line shows it: one line, `basegpt: warning: ...`, through
    the progress bar if one is drawn (not Python's "file:line: UserWarning:" and the source
    line, which are for the library's developers)."""
    _log(f"basegpt: warning: {message}")


def _on_sigterm(handler: object) -> object:
    """Install `handler` for SIGTERM and return the one it replaces (only the main thread
    may; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread() or handler is None:
        return None
    return signal.signal(signal.SIGTERM, handler)


if __name__ == "__main__":
    raise SystemExit(main())
