"""basegpt.insight: eval, info and attention maps as library functions (in-process, tiny)."""

import math

import pytest
import torch
import torch.nn.functional as F

from basegpt import B2lM, Tokenizer
from basegpt.checkpoint import save_run
from basegpt.insight import (attention_maps, evaluate_run, parameter_counts, plot_attention,
                             run_info)

TEXT = "def add(a, b):\n    return a + b\n\nclass Point:\n    x: int = 0\n" * 8


@pytest.fixture(scope="module")
def tokenizer():
    tok = Tokenizer(vocab_size=289)                 # every merge TEXT has
    tok.train([TEXT], progress=False)
    return tok


def tiny(tokenizer, **kw):
    torch.manual_seed(0)
    cfg = dict(vocab_size=len(tokenizer), n_context=16, n_block=2, n_embed=32, n_head=2, n_k=8,
               n_v=8, n_ff=64)
    return B2lM(**{**cfg, **kw}).eval()


def test_attention_maps_come_from_the_manual_path_even_for_sdpa(tokenizer):
    sdpa, manual = tiny(tokenizer, attention="sdpa"), tiny(tokenizer, attention="manual")
    prompt = "def add(a, b):"
    tokens, maps = attention_maps(sdpa, tokenizer, prompt)
    T = len(tokenizer.encode(prompt))
    assert len(tokens) == T and len(maps) == 2, f"{len(tokens)} tokens, {len(maps)} layers"
    for m in maps:
        assert m.shape == (2, T, T), f"map shape {tuple(m.shape)}"
        torch.testing.assert_close(m.sum(-1), torch.ones(2, T))               # rows are distributions
        assert torch.all(m.triu(diagonal=1) == 0), "a query attended to a later token"
    _, manual_maps = attention_maps(manual, tokenizer, prompt)
    for a, b in zip(maps, manual_maps):
        torch.testing.assert_close(a, b)
    assert not sdpa.training, "attention_maps must leave the model's mode as it was"


def test_attention_maps_reject_empty_and_too_long_prompts(tokenizer):
    model = tiny(tokenizer)
    with pytest.raises(ValueError, match="the text is empty: attention needs at least one token") as error:
        attention_maps(model, tokenizer, "")
    assert "--" not in str(error.value), "a library call (and the web page) has no flags to name"
    with pytest.raises(ValueError, match="n_context is 16"):
        attention_maps(model, tokenizer, "zq" * 40)


def test_plot_attention_writes_a_png_and_checks_layer_and_head(tokenizer, tmp_path):
    tokens, maps = attention_maps(tiny(tokenizer), tokenizer, "x = 1")
    out = plot_attention(tokens, maps, tmp_path / "a.png")
    assert out.read_bytes()[:4] == b"\x89PNG", "not a PNG"
    plot_attention(tokens, maps, tmp_path / "b.png", layer=1, head=0)
    assert (tmp_path / "b.png").is_file()
    with pytest.raises(ValueError, match="0..1"):
        plot_attention(tokens, maps, tmp_path / "c.png", layer=2)
    with pytest.raises(ValueError, match="--head 2"):
        plot_attention(tokens, maps, tmp_path / "c.png", head=2)


@pytest.mark.parametrize("kw", [{}, {"tie_weights": True, "positional": "learned",
                                      "norm_position": "pre"}])
def test_parameter_counts_add_up(tokenizer, kw):
    model = tiny(tokenizer, **kw)
    c = parameter_counts(model)
    parts = c["embedding"] + c["positional"] + sum(b["total"] for b in c["blocks"]) \
        + c["final_norm"] + c["head"]
    assert parts == c["total"] == model.num_parameters(), (parts, c)
    V, C = len(tokenizer), 32
    assert c["head"] == (0 if kw.get("tie_weights") else V * C), c
    attn = 32 * (2 * 8 * 3) + 2 * 8 * 3 + (2 * 8) * 32 + 32              # qkv + out, with biases
    assert c["blocks"][0]["attention"] == attn, c["blocks"][0]


def test_evaluate_run_on_text_is_the_plain_cross_entropy(tokenizer, tmp_path):
    model = tiny(tokenizer)
    save_run(tmp_path / "run", model, tokenizer)
    text = "class Point:\n    x: int = 0\n"
    scores = evaluate_run(tmp_path / "run", text=text, device="cpu")
    ids = torch.tensor([tokenizer.encode(text)])
    assert ids.shape[1] <= 17, "the text should fit in one window for this known answer"
    with torch.no_grad():
        logits = model(ids[:, :-1])
    expected = F.cross_entropy(logits[0], ids[0, 1:]).item()
    assert math.isclose(scores["loss"], expected, rel_tol=1e-5), (scores, expected)
    n_bytes = sum(len(tokenizer.vocab[i]) for i in ids[0, 1:].tolist())
    assert math.isclose(scores["bits_per_byte"], expected * (ids.shape[1] - 1) / math.log(2) / n_bytes,
                        rel_tol=1e-5), scores
    with pytest.raises(ValueError, match="not made by `basegpt train`"):
        evaluate_run(tmp_path / "run")                     # no spec: its validation data is unknown


def test_run_info_of_a_saved_but_untrained_run(tokenizer, tmp_path):
    save_run(tmp_path / "run", tiny(tokenizer), tokenizer)
    info = run_info(tmp_path / "run")
    assert info["progress"]["steps"] == 0 and info["best"] is None and info["checkpoints"] == [], info
    assert info["tokenizer"]["matches_model"] and info["tokenizer"]["hash"] == tokenizer.hash
    with pytest.raises(FileNotFoundError, match="no such run directory"):
        run_info(tmp_path / "missing")
