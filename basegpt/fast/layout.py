"""Weights in the memory order that batch-1 products stream fastest on a CPU."""

from __future__ import annotations

from torch import nn

from basegpt.fast.switch import enabled


def prepare(model: nn.Module) -> nn.Module:
    """`store_transposed(model)` where the switch is on; returns the model. basegpt calls it
    on every model it builds (load_run, train_run, basegpt.B2lM), before any optimizer."""
    if enabled():
        store_transposed(model)
    return model


def store_transposed(model: nn.Module) -> None:
    """Keep the weight of every nn.Linear, shape (out, in), in (in, out) memory order, as
    GPT-2's Conv1D does. Call it before building an optimizer for the model.

    Shapes and values stay the same, and each Parameter stays the same object (its .data is
    re-laid): F.linear(x, W) computes x @ W^T, and with W^T contiguous in memory that is a
    plain row-major product. It matters when decoding: at batch 1 a step reads every weight
    once from memory, and on a CPU x @ W^T streams a contiguous W^T faster than a transposed
    view (BENCHMARKS.md; `bench_generate.py --layouts`). A tied head's (V, C) table is laid out
    the same way, so the head streams fast too and the embedding lookup reads a strided column
    instead of a row (a cost within the noise of the forward+backward benchmark).

    Parameters keep their layout through .to() and load_state_dict (which copies into them),
    and an optimizer's moments are made like them; a moment loaded from a file is given its
    parameter's layout (optimizer_state.optimizer_from_flat), since fused Adam on a CPU pairs
    parameter and moment elements by memory position.
    """
    for module in model.modules():
        if isinstance(module, nn.Linear):      # a tied head's weight is the embedding's table
            weight = module.weight
            weight.data = weight.data.t().contiguous().t()     # the same (out, in) matrix
