"""Build hook for basegpt's two optional C extensions: the BPE tokenizer's hot loops
(basegpt/tokenizer/_bpe.c) and the compiled one-token decoding step (basegpt/fast/_decode.c).

All metadata lives in pyproject.toml; this file exists only because setuptools still needs
Python code to declare a C extension. The extensions are optional: when no compiler is found,
or compiling fails, the install goes on and basegpt uses its pure-Python fast trainer and
encoder, which return exactly the same merges and ids (tests/test_tokenizer_train.py,
tests/test_tokenizer_c.py), and decodes with DecodeStep, which gives the same logits to float
rounding (tests/test_fast_decode.py). Set BASEGPT_NO_EXT=1 to skip both on purpose.
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
              "its pure-Python fallback will be used", file=sys.stderr)


ext_modules = []
if os.environ.get("BASEGPT_NO_EXT") != "1":
    ext_modules.append(Extension("basegpt.tokenizer._bpe", ["basegpt/tokenizer/_bpe.c"],
                                 extra_compile_args=["-O3"] if os.name != "nt" else []))
    # POSIX threads: not on Windows, where generation keeps DecodeStep. No -march=native: a
    # wheel must run on any CPU of its platform; _decode.c compiles its hot loops for several
    # x86-64 levels itself and picks one when it loads.
    if os.name != "nt":
        ext_modules.append(Extension("basegpt.fast._decode", ["basegpt/fast/_decode.c"],
                                     extra_compile_args=["-O3", "-pthread"],
                                     extra_link_args=["-pthread"]))

setup(ext_modules=ext_modules, cmdclass={"build_ext": OptionalBuildExt})
