"""Which models the fast decoding steps (decode.py, compiled.py) may stand in for.

A step skips the module calls of B2lM.forward and computes what basegpt's own parts compute,
so it is used only where the model is made of those parts as they are: not a subclass that
may compute something else, no forward hook (it would not run), not in training mode.
"""

from __future__ import annotations

from torch import nn

from basegpt.model.attention import CausalSelfAttention
from basegpt.model.b2lm import B2lM
from basegpt.model.block import PostNormBlock, PreNormBlock
from basegpt.model.feedforward import MLP, SwiGLU


def unsupported(model: nn.Module) -> str | None:
    """Why `DecodeStep` cannot stand in for this model's forward, or None if it can."""
    if not isinstance(model, B2lM) or type(model).forward is not B2lM.forward:
        return f"{type(model).__name__} is not B2lM or overrides its forward"
    if model.training:
        return "the model is in training mode (dropout is on); generation runs in eval mode"
    tables = [getattr(nn.modules.module, name, None)     # torch's private global hook tables
              for name in ("_global_forward_hooks", "_global_forward_pre_hooks")]
    if any(table is None for table in tables):
        return "this torch keeps its global forward hooks where DecodeStep cannot check them"
    if any(tables):
        return "a global forward hook is registered"
    for name, module in model.named_modules():          # one walk: it runs every generation
        if module._forward_hooks or module._forward_pre_hooks:
            return f"{name or 'the model'} has a forward hook"
        if isinstance(module, nn.Linear) and type(module) is not nn.Linear:
            return f"{name} is a {type(module).__name__}, a subclass of nn.Linear"
    if type(model.tok_emb) is not nn.Embedding:
        return f"tok_emb is a {type(model.tok_emb).__name__}, not nn.Embedding"
    for i, block in enumerate(model.blocks):
        parts = {"block": (block, (PreNormBlock, PostNormBlock)),
                 "attention": (block.attn, (CausalSelfAttention,)),
                 "feed-forward": (block.ff, (MLP, SwiGLU))}
        for what, (part, known) in parts.items():
            if type(part) not in known:
                return f"block {i}'s {what} is a {type(part).__name__}, not one of basegpt's"
    return None
