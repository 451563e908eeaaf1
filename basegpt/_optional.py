"""Optional libraries, imported inside the function that uses them.

A missing one is a `MissingDependency`: an ImportError whose message names the pip command
that adds it, which the command line prints as a one-line user error (exit code 2) rather
than a traceback. Any other ImportError stays a traceback, since it means a basegpt bug.

    require("tiktoken", "exporting to tiktoken")
    -> MissingDependency: exporting to tiktoken needs tiktoken: pip install tiktoken
"""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingDependency(ImportError):
    """An optional library is not installed; the message says how to install it."""


def require(module: str, purpose: str, package: str | None = None) -> ModuleType:
    """Import `module`, or raise MissingDependency naming `package` (default: the module's
    top-level name) and the pip command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        package = package or module.split(".")[0]
        raise MissingDependency(f"{purpose} needs {package}: pip install {package}") from error
