"""basegpt: a GPT-style language model from first principles.

The public API, as in the original design:

    from basegpt import Tokenizer, SlidingWindowDataset, B2lM
    tokenizer = Tokenizer(vocab_size=500)
    tokenizer.trainTokenizer(text)
    ...
    model.train(loader, epochs=10)

B2lM and load_run come from basegpt/api.py, where the conveniences that join the layers
live (a model that trains itself, a run that generates); compare, the ablation lab behind
`basegpt compare`, from basegpt/ablation.py (its own module name, so that the package
attribute `basegpt.compare` stays the function).

The tokenizer needs no torch, so `import basegpt` and `from basegpt import Tokenizer` do not
import it: names that need torch (the model, the datasets) are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from basegpt.corpus import builtin_corpus
from basegpt.tokenizer import Tokenizer

# Tokenizer subclasses register their tokenizer.json fields on import, for Tokenizer.load.
import basegpt.interop.renumbered  # noqa: F401

__version__ = "0.1.0"

# name -> module that defines it; imported when the name is first looked up (PEP 562).
_LAZY = {
    "B2lM": "basegpt.api",
    "compare": "basegpt.ablation",
    "load_run": "basegpt.api",
    "ModelConfig": "basegpt.config",
    "SlidingWindowDataset": "basegpt.data",
}

__all__ = ["Tokenizer", "builtin_corpus", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'basegpt' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
