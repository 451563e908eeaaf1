"""Hugging Face Llama interop, and the config keys the ecosystem's tools read.

Export: random Llama-compatible basegpt models (grouped and multi-query heads, biases on and
off, tied and untied heads, head widths other than n_embed / n_head) load in transformers'
LlamaForCausalLM with the same logits and greedy tokens, and their tokenizer.json gives
basegpt's ids in PreTrainedTokenizerFast. Import: a random-init LlamaForCausalLM saved by
transformers becomes a run with HF's logits, and goes back out bit for bit. Models that no
Hugging Face architecture expresses are refused with every field named, the nearest
exportable preset and the command that trains one.

Nothing is downloaded (HF_HUB_OFFLINE=1): every HF model is built by transformers here.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
transformers = pytest.importorskip("transformers", reason="transformers is a test extra")

from basegpt import B2lM, Tokenizer  # noqa: E402
from basegpt.config import ModelConfig  # noqa: E402
from basegpt.interop.hf_gpt2 import export_hf  # noqa: E402


# ------------------------------------------------------------------------ GPT-2 config keys

def test_gpt2_config_has_every_key_transformers_saves_and_n_ctx(tmp_path):
    """llama.cpp's convert_hf_to_gguf.py reads hparams["n_ctx"] for GPT-2 models; transformers
    5 no longer writes it, the original GPT-2 files do."""
    config = ModelConfig(vocab_size=258, n_context=16, n_block=2, n_embed=32, n_head=4, n_k=8,
                         n_v=8, n_ff=64, norm_position="pre", positional="learned",
                         activation="gelu")
    export_hf((B2lM(config), Tokenizer()), tmp_path / "ours")
    ours = json.loads((tmp_path / "ours" / "config.json").read_text())
    hf_model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=258, n_positions=16, n_embd=32, n_layer=2, n_head=4, n_inner=64))
    hf_model.save_pretrained(tmp_path / "theirs")
    theirs = json.loads((tmp_path / "theirs" / "config.json").read_text())
    missing = sorted(set(theirs) - set(ours) - {"transformers_version"})
    assert not missing, f"keys transformers writes that our config.json lacks: {missing}"
    assert ours["n_ctx"] == ours["n_positions"] == 16, ours
    assert ours["torch_dtype"] == ours["dtype"] == "float32", ours
    loaded = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "ours")
    assert loaded.config.n_positions == 16 and loaded.config.n_inner == 64, loaded.config
