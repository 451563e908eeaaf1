"""basegpt: a GPT-style language model from first principles.

The public API, as in the original design:

    from basegpt import Tokenizer
    tokenizer = Tokenizer(vocab_size=500)
    tokenizer.trainTokenizer(text)
"""

from basegpt.corpus import builtin_corpus
from basegpt.tokenizer import Tokenizer

__version__ = "0.1.0"

__all__ = ["Tokenizer", "builtin_corpus", "__version__"]
from basegpt.model import B2lM, ModelConfig; __all__ += ["B2lM", "ModelConfig"]  # noqa: E402,E702 (model, issue 4)
