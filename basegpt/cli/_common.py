"""What every subcommand shares: the argument parser that reports a usage error in one line,
the exceptions that count as user errors, and logging to stderr."""

from __future__ import annotations

import argparse
import difflib
import errno
import sys

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


def _log(message: str) -> None:
    print(message, file=sys.stderr)
