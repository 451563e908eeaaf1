"""The public API's conveniences, on top of the library: one module that imports the others.

    from basegpt import B2lM, load_run
    model = B2lM(vocab_size=len(tokenizer), n_embed=128, n_block=4, n_k=32, n_v=32,
                 n_head=4, n_ff=256)
    model.train(loader, epochs=10)               # basegpt.train.fit(model, loader, epochs=10)
    run = load_run("runs/laptop")
    run.generate("def ", max_new_tokens=50)      # basegpt.generate.generate(run.model, ...)

The model (model/), the trainer (train.py), sampling (generate.py) and the run directory
(checkpoint.py) do not import one another upward: the model knows nothing of training, a
run directory nothing of sampling. These calls, which join them, live here instead, so that
the arrows between modules point one way (this module -> train, generate -> model).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from basegpt import checkpoint, fast, model
from basegpt.generate import generate
from basegpt.train import fit


class B2lM(model.B2lM):
    """basegpt.model.B2lM, which can also train itself: `model.train(loader, epochs=10)`, and
    whose weights are laid out as basegpt.fast.prepare lays them (the same values)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        fast.prepare(self)

    def train(self, mode: Any = True, epochs: int | float | None = None,  # type: ignore[override]
              **settings: Any) -> Any:
        """`model.train()` / `model.train(False)`: switch training mode (PyTorch's meaning),
        returns the model. `model.train(loader_or_dataset, epochs=N, **settings)`: train it,
        with basegpt.train.fit(model, data, epochs=N, **settings); returns fit's TrainResult.
        """
        if isinstance(mode, bool):
            if epochs is not None or settings:
                raise TypeError("model.train(True/False) switches the training mode and takes "
                                "no other arguments; to train, pass data: "
                                "model.train(loader, epochs=N)")
            return super().train(mode)
        if epochs is not None:
            settings["epochs"] = epochs
        return fit(self, mode, **settings)


class Run(checkpoint.Run):
    """checkpoint.Run, which can also sample: `run.generate(prompt, **settings)`."""

    def generate(self, prompt: str, **settings: Any) -> Any:
        """basegpt.generate.generate with this run's model and tokenizer."""
        return generate(self.model, self.tokenizer, prompt, **settings)


def load_run(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> Run:
    """checkpoint.load_run, giving a Run that can generate and a model that can train."""
    run = checkpoint.load_run(run_dir, device, model_class=B2lM)
    return Run(path=run.path, model=run.model, tokenizer=run.tokenizer, config=run.config)
