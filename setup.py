"""Build hook for basegpt's one optional C extension (the BPE training hot loop).

All metadata lives in pyproject.toml; this file exists only because setuptools still needs
Python code to declare a C extension. The extension is optional: when no compiler is found,
or compiling fails, the install goes on and basegpt uses its pure-Python fast trainer,
which returns exactly the same merges (tests/test_tokenizer_train.py proves it).
Set BASEGPT_NO_EXT=1 to skip the extension on purpose.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """Build C extensions, but never fail the install because of them."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:  # no compiler at all: setuptools raises before compiling
            self._warn(error)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as error:
            self._warn(error)

    @staticmethod
    def _warn(error: Exception) -> None:
        print(f"basegpt: optional C extension not built ({error}); "
              "the pure-Python trainer will be used", file=sys.stderr)


ext_modules = []
if os.environ.get("BASEGPT_NO_EXT") != "1":
    ext_modules.append(Extension("basegpt.tokenizer._bpe", ["basegpt/tokenizer/_bpe.c"],
                                 extra_compile_args=["-O3"] if os.name != "nt" else []))

setup(ext_modules=ext_modules, cmdclass={"build_ext": OptionalBuildExt})
