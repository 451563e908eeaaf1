"""Shared test settings.

The fixtures are tiny (2 blocks, width 32, T <= 16): for matrices that small one thread is
faster than several, and it keeps the suite's timing steady on a busy 2-core machine.
"""

import pytest
import torch

from basegpt import SlidingWindowDataset, Tokenizer
from helpers import TEXT

torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Tests marked @pytest.mark.gpu need CUDA; without it they skip, saying why."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def step0_weights(monkeypatch) -> dict:
    """The weights the first training step computes with, filled in when fit() takes it."""
    import basegpt.train
    from basegpt.checkpoint import model_tensors
    seen: dict = {}
    forward_backward = basegpt.train._forward_backward

    def first_step_sees_the_weights(model, *args):
        if not seen:
            seen.update({k: v.clone() for k, v in model_tensors(model).items()})
        return forward_backward(model, *args)
    monkeypatch.setattr(basegpt.train, "_forward_backward", first_step_sees_the_weights)
    return seen


@pytest.fixture
def cli_help(capsys):
    """cli_help(argv) -> {flag: its whole help entry on one line} of `basegpt ARGV --help`:
    "--positional" -> "--positional {sinusoidal,learned,rope,none} (default rope)", with
    argparse's line wraps undone, so a test can find a flag's choices and default."""
    import re
    from basegpt.cli import main

    def entries(argv: list[str]) -> dict[str, str]:
        with pytest.raises(SystemExit):
            main([*argv, "--help"])
        out, flag = {}, None
        for line in capsys.readouterr().out.splitlines():
            first = re.match(r"  (--?[\w-]+)", line)       # an option's first line
            if first:
                flag = first.group(1)
                out[flag] = line.strip()
            elif flag and line.startswith("    "):         # its help, wrapped
                out[flag] += " " + line.strip()
            else:
                flag = None
        return out
    return entries


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    """A 320-token tokenizer trained on TEXT."""
    return Tokenizer(vocab_size=320).train(TEXT, progress=False)


@pytest.fixture(scope="module")
def data(tokenizer):
    """16-token windows over TEXT."""
    return SlidingWindowDataset(tokenizer=tokenizer, n_context=16, texts=[TEXT])
