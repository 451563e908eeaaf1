"""What every subcommand shares: the argument parser that reports a usage error in one line,
the flags derived from a settings dataclass, the exceptions that count as user errors, and
logging to stderr."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import errno
import sys
import types
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from basegpt._optional import MissingDependency


# What a user can cause and fix: bad values, and paths that are missing, of the wrong kind
# (a file where a folder must go, or the reverse) or not writable; an optional library that
# is not installed. Any other exception is a basegpt bug and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, TypeError, FileExistsError, NotADirectoryError,
               IsADirectoryError, PermissionError, MissingDependency)

# An OSError with one of these errnos is the disk's or the folder's, not basegpt's: the user
# fixes it by making room or writing elsewhere. Each gets one line (the path, the cause, the
# fix; {elsewhere} is "choose another path", or for the cache "set BASEGPT_CACHE ...") and
# exit code 2. Any other OSError (EIO, a bad file descriptor) may be a basegpt bug or a
# failing disk, and keeps its traceback, which is what a report of either needs.
PATH_ERRNOS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on device", "free some space, or {elsewhere}"),
    errno.EDQUOT: ("disk quota exceeded", "free some space, or {elsewhere}"),
    errno.EFBIG: ("file too large for its file system", "{elsewhere} on another file system"),
    errno.EROFS: ("read-only file system", "{elsewhere} on a writable file system"),
    errno.EACCES: ("permission denied", "check its permissions, or {elsewhere}"),
    errno.EPERM: ("operation not permitted", "check its permissions, or {elsewhere}"),
}


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


def _union_members(hint: Any) -> tuple[Any, ...]:
    """`X | None` -> (X,); any other hint -> (hint,)."""
    args = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
    return tuple(a for a in args if a is not type(None))


def _flag_type(hint: Any) -> type | None:
    """The argparse type for a dataclass field's resolved type hint: int, float, None for a
    bool (an on/off flag), and str for the rest (names and Literal choices, which the config
    itself checks). `X | None` counts as X."""
    kinds = list(_union_members(hint))
    if kinds == [bool]:
        return None
    if kinds in ([int], [float]):
        return kinds[0]
    return str


def _choices(hint: Any) -> tuple[str, ...]:
    """The values a Literal hint (or `Literal[...] | None`) allows; () for any other hint."""
    return tuple(str(c) for k in _union_members(hint) if get_origin(k) is Literal
                 for c in get_args(k))


def add_field_flags(parser: argparse.ArgumentParser, cls: type, section: str, title: str,
                    defaults: dict[str, Any] | None = None, skip: tuple[str, ...] = (),
                    flag_names: dict[str, str] | None = None) -> argparse._ArgumentGroup:
    """One --flag per field of the dataclass `cls` (but `skip`), stored as "SECTION.FIELD"
    and absent unless given (`field_values` collects them), so the dataclass stays the only
    home of defaults and checks. The help is the field's metadata["help"], if any, and the
    default that a run without the flag uses: `defaults[name]` (e.g. a preset's) or else the
    field's own. A Literal field lists its choices ({post,pre}) but the config checks the value,
    so a typo gets the config's "did you mean"; a bool field is --name / --no-name. Returns
    the group of flags, titled `title`."""
    hints = get_type_hints(cls)
    defaults = defaults or {}
    group = parser.add_argument_group(title)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        dest = f"{section}.{f.name}"
        flag = (flag_names or {}).get(dest, "--" + f.name.replace("_", "-"))
        own = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        default = defaults.get(f.name, own)
        about = f.metadata.get("help", "")
        help_ = (f"{about} (default {default})" if about else f"(default {default})")
        help_ = help_.replace("%", "%%")           # argparse %-formats help strings
        kind = _flag_type(hints[f.name])
        choices = _choices(hints[f.name])
        if kind is None:
            group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=help_)
        else:
            metavar = "{" + ",".join(choices) + "}" if choices else f.name.upper()
            group.add_argument(flag, dest=dest, type=kind, default=argparse.SUPPRESS,
                               metavar=metavar, help=help_)
    return group


def field_values(args: argparse.Namespace, section: str) -> dict[str, Any]:
    """The fields of `section` given as flags (see add_field_flags): {field: value}."""
    prefix = section + "."
    return {dest[len(prefix):]: value for dest, value in vars(args).items()
            if dest.startswith(prefix)}


def _log(message: str) -> None:
    """A line on stderr, written above the progress bar if one is drawn (tqdm.write), never
    glued to its end."""
    from tqdm.auto import tqdm
    tqdm.write(message, file=sys.stderr)
