"""Run directories: identical logits after a round trip, no pickle, clear errors when damaged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from basegpt import B2lM, Tokenizer
from basegpt.checkpoint import (CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE, load_run, save_run,
                                unwrap)


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer(vocab_size=272).train("hello world, hello there " * 30, progress=False)


def _model(tokenizer: Tokenizer, **kw) -> B2lM:
    torch.manual_seed(0)
    return B2lM(vocab_size=len(tokenizer), n_embed=32, n_block=2, n_head=2, n_k=16, n_v=16,
                n_ff=64, n_context=16, **kw).eval()


@pytest.mark.parametrize("tie", [False, True])
def test_round_trip_gives_identical_logits(tokenizer, tmp_path: Path, tie: bool):
    model = _model(tokenizer, tie_weights=tie, positional="learned")
    save_run(tmp_path / "run", model, tokenizer, train_config={"lr": 0.001})
    run = load_run(tmp_path / "run")
    ids = torch.tensor([tokenizer.encode("hello world")])
    torch.testing.assert_close(run.model(ids), model(ids), rtol=0, atol=0)
    assert not run.model.training, "loaded model is in eval mode"
    assert run.tokenizer.hash == tokenizer.hash, "same tokenizer"
    assert run.config["train"] == {"lr": 0.001}, "train config kept"
    if tie:
        assert run.model.lm_head.weight is run.model.tok_emb.weight, "tie survives loading"


def test_run_directory_holds_no_pickle(tokenizer, tmp_path: Path):
    save_run(tmp_path / "run", _model(tokenizer), tokenizer)
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == [CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE], names
    for path in (tmp_path / "run").iterdir():
        assert not path.read_bytes().startswith(b"\x80"), f"{path.name} looks like a pickle"
    json.loads((tmp_path / "run" / CONFIG_FILE).read_text())  # plain JSON


def test_compile_and_ddp_prefixes_are_removed(tokenizer, tmp_path: Path):
    model = _model(tokenizer)

    class Wrapper(torch.nn.Module):          # stands in for DDP: the model under .module
        def __init__(self, m):
            super().__init__()
            self.module = m
    assert unwrap(Wrapper(model)) is model, "unwrap finds the model"
    save_run(tmp_path / "run", Wrapper(model), tokenizer)
    from safetensors import safe_open
    with safe_open(tmp_path / "run" / WEIGHTS_FILE, "pt") as f:
        assert all(not k.startswith(("module.", "_orig_mod.")) for k in f.keys()), list(f.keys())


def test_damaged_runs_give_clear_errors(tokenizer, tmp_path: Path):
    run = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match="no such run directory"):
        load_run(run)
    save_run(run, _model(tokenizer), tokenizer)
    other = Tokenizer(vocab_size=280).train("completely different text " * 30, progress=False)
    other.save(run / TOKENIZER_FILE)
    with pytest.raises(ValueError, match="is not the tokenizer this model was trained with"):
        load_run(run)
    tokenizer.save(run / TOKENIZER_FILE)
    (run / WEIGHTS_FILE).write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_run(run)
    save_run(run, _model(tokenizer), tokenizer)
    config = json.loads((run / CONFIG_FILE).read_text())
    config["model"]["n_embed"] = 48
    (run / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"tensor [\w.]+ has shape \(32,\) but the config needs \(48,\)"):
        load_run(run)
    config["version"] = 7
    (run / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="unknown run format version 7"):
        load_run(run)


def test_vocab_mismatch_is_refused(tokenizer, tmp_path: Path):
    model = B2lM(vocab_size=len(tokenizer) + 1, n_embed=32, n_block=1, n_head=2, n_k=16,
                 n_v=16, n_ff=64)
    with pytest.raises(ValueError, match="vocab_size=len\\(tokenizer\\)"):
        save_run(tmp_path / "run", model, tokenizer)
