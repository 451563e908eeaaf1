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
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

os.environ["HF_HUB_OFFLINE"] = "1"
transformers = pytest.importorskip("transformers", reason="transformers is a test extra")
tokenizers = pytest.importorskip("tokenizers", reason="tokenizers is a test extra")

from basegpt import B2lM, Tokenizer  # noqa: E402
from basegpt.checkpoint import load_run, save_run  # noqa: E402
from basegpt.cli import main  # noqa: E402
from basegpt.config import ModelConfig  # noqa: E402
from basegpt.corpus import builtin_corpus  # noqa: E402
from basegpt.interop.hf import (export_auto, export_hf, export_llama, hf_format,  # noqa: E402
                                import_hf)
from basegpt.interop.hf_llama import llama_incompatibilities  # noqa: E402

TEXT = ("Hello, world! Ça va? Grüße aus Köln. Привет, мир. 你好，世界。こんにちは。 😀👍🏽 e\u0301 ﬁ ½\n"
        "def add(a, b):\n    return a + b  # it's they'll\n\tx = 12345678; y = 3.14\r\n  end\n"
        "one<|endoftext|>two<|pad|> three   \n\n\n")
ATOL = RTOL = 1e-4
INIT_STD = 0.1     # wide weights: well-separated logits, so greedy never meets a near-tie

# Llama-compatible basegpt models (besides the four fixed fields below): grouped-query,
# multi-query and plain heads, biases on and off, tied and untied heads, head widths wider
# and narrower than n_embed / n_head, a non-default RoPE base and eps.
SHAPES = {
    "gqa-tied": dict(n_embed=32, n_head=4, n_kv_head=2, n_k=8, n_ff=48, bias=False,
                     tie_weights=True),
    "mqa-bias-untied": dict(n_embed=32, n_head=4, n_kv_head=1, n_k=8, n_ff=40, bias=True,
                            tie_weights=False),
    "wide-heads-bias-tied": dict(n_embed=32, n_head=2, n_k=24, n_ff=64, bias=True,
                                 tie_weights=True, rope_base=500.0, norm_eps=1e-6),
    "narrow-heads-gqa-untied": dict(n_embed=48, n_head=6, n_kv_head=3, n_k=4, n_ff=56,
                                    bias=False, tie_weights=False, n_block=3),
}
LLAMA = dict(norm_position="pre", norm="rmsnorm", positional="rope", activation="swiglu")


def _docs() -> list[str]:
    return list(builtin_corpus(40_000)) + [TEXT * 3]


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Every parameter random, norms' gains around 1 and biases nonzero, so that a swapped
    norm, bias or q/k/v slice changes the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * INIT_STD
            p.copy_(1 + noise if "norm" in name else noise)


def _greedy(model: B2lM, ids: list[int], n: int) -> list[int]:
    """Cached greedy decoding, written out so this test depends only on the model."""
    cache = model.new_kv_cache(1, len(ids) + n)
    x, out = torch.tensor([ids]), []
    with torch.no_grad():
        for _ in range(n):
            next_id = int(model(x, kv_cache=cache, logits_for="last")[0, -1].argmax())
            out.append(next_id)
            x = torch.tensor([[next_id]])
    return out


def _hf_greedy(hf_model, ids: list[int], n: int) -> list[int]:
    hf_model.generation_config.eos_token_id = None      # basegpt's loop above never stops early
    out = hf_model.generate(torch.tensor([ids]), max_new_tokens=n, min_new_tokens=n,
                            do_sample=False, pad_token_id=0)
    return out[0, len(ids):].tolist()


def _hf_ids(hf_tok, text: str) -> list[int]:
    """HF's ids with special-token text encoded as ordinary text, as basegpt's default."""
    backend = hf_tok.backend_tokenizer
    backend.encode_special_tokens = True
    try:
        return backend.encode(text, add_special_tokens=False).ids
    finally:
        backend.encode_special_tokens = False


def _check_same_model(model: B2lM, tok: Tokenizer, hf_model, hf_tok) -> None:
    """Ids on text (special tokens as text and as specials), logits on random ids and on
    text, and 40 greedy tokens: all the same."""
    assert tok.encode(TEXT) == _hf_ids(hf_tok, TEXT), "ids with special-token text as text"
    ids = tok.encode(TEXT, allowed_special="all")
    assert ids == hf_tok(TEXT).input_ids, "ids with special tokens (HF's default)"
    assert tok.special_tokens["<|endoftext|>"] in ids, "the text holds a special token"
    T = model.config.n_context
    g = torch.Generator().manual_seed(0)
    random_ids = torch.randint(0, model.config.vocab_size, (2, T), generator=g)
    with torch.no_grad():
        for x in (random_ids, torch.tensor([ids[:T]])):
            torch.testing.assert_close(model(x), hf_model(x).logits, atol=ATOL, rtol=RTOL)
    prompt = ids[:8]
    assert _greedy(model, prompt, 40) == _hf_greedy(hf_model, prompt, 40), \
        "greedy decoding gives the same 40 tokens"


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


# ------------------------------------------------------------------------ export

@pytest.fixture(scope="module")
def basegpt_tokenizer():
    return Tokenizer(vocab_size=420, pattern="gpt4").train(_docs(), progress=False)


@pytest.fixture(scope="module", params=sorted(SHAPES))
def exported(request, basegpt_tokenizer, tmp_path_factory):
    """(model, tokenizer, HF model, HF tokenizer, run dir, export dir) for one shape, exported
    by `basegpt export --format llama`."""
    shape = SHAPES[request.param]
    tok = basegpt_tokenizer
    config = ModelConfig(vocab_size=len(tok), n_context=48, **{"n_block": 2, **shape},
                         n_v=shape["n_k"], **LLAMA)
    model = B2lM(config).eval()
    _randomize(model, seed=sorted(SHAPES).index(request.param))
    run_dir = tmp_path_factory.mktemp(f"bg-{request.param}")
    save_run(run_dir, model, tok)
    out = tmp_path_factory.mktemp(f"bg-llama-{request.param}") / "hf"
    assert main(["export", str(run_dir), "--format", "llama", str(out)]) == 0
    hf_model = transformers.LlamaForCausalLM.from_pretrained(out).eval()
    hf_tok = transformers.PreTrainedTokenizerFast.from_pretrained(out)
    return model, tok, hf_model, hf_tok, run_dir, out


def test_export_loads_in_llama_for_causal_lm_with_the_same_ids_logits_and_tokens(exported):
    model, tok, hf_model, hf_tok, _, out = exported
    c = model.config
    hf = hf_model.config
    assert (hf.num_attention_heads, hf.num_key_value_heads, hf.head_dim) == \
        (c.n_head, c.n_kv_head or c.n_head, c.n_k), "heads as basegpt's"
    assert (hf.attention_bias, hf.mlp_bias) == (c.bias, c.bias), "biases as basegpt's"
    assert (hf_model.lm_head.weight is hf_model.model.embed_tokens.weight) == c.tie_weights
    assert hf_model.model.layers[0].self_attn.q_proj.weight.shape == (c.n_head * c.n_k, c.n_embed)
    assert hf.eos_token_id == tok.eot_id and hf.pad_token_id == tok.pad_id, "special ids"
    auto_tok = transformers.AutoTokenizer.from_pretrained(out)
    assert auto_tok(TEXT).input_ids == hf_tok(TEXT).input_ids, "AutoTokenizer: the same ids"
    _check_same_model(model, tok, hf_model, hf_tok)


def test_llama_config_has_every_key_transformers_saves(exported, tmp_path):
    model, _, hf_model, _, _, out = exported
    ours = json.loads((out / "config.json").read_text())
    hf_model.save_pretrained(tmp_path)             # transformers' own config.json for it
    theirs = json.loads((tmp_path / "config.json").read_text())
    assert sorted(set(theirs) - set(ours) - {"transformers_version"}) == [], (theirs, ours)
    for key in set(theirs) - {"transformers_version"}:
        assert ours[key] == theirs[key], f"{key}: ours {ours[key]!r}, transformers' {theirs[key]!r}"
    assert ours["rope_theta"] == ours["rope_parameters"]["rope_theta"] == model.config.rope_base
    assert ours["torch_dtype"] == ours["dtype"] == "float32"


def test_import_of_export_keeps_tensors_and_ids_identical(exported, tmp_path):
    model, tok, _, _, _, out = exported
    result = import_hf(out, tmp_path / "run")
    assert result.architecture == "llama"
    run = load_run(tmp_path / "run")
    assert run.tokenizer.token_ids is None and run.tokenizer.hash == tok.hash, "the same tokenizer"
    assert run.model.config == model.config, "the same model settings"
    for name, tensor in model.state_dict().items():
        assert torch.equal(run.model.state_dict()[name], tensor), name


# ------------------------------------------------------------------------ import

IMPORT_SHAPES = {
    "gqa-tied": dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                     intermediate_size=48, num_hidden_layers=2, tie_word_embeddings=True),
    "mqa-bias-untied-wide": dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=1,
                                 head_dim=12, intermediate_size=40, num_hidden_layers=2,
                                 attention_bias=True, mlp_bias=True, tie_word_embeddings=False,
                                 rms_norm_eps=1e-5, rope_parameters={"rope_theta": 300.0,
                                                                     "rope_type": "default"}),
}


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory):
    """A byte-level BPE trained by `tokenizers`, special tokens first: ids in its own order,
    not basegpt's."""
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(_docs(), vocab_size=420, show_progress=False,
                            special_tokens=["<|endoftext|>", "<|pad|>"])
    path = tmp_path_factory.mktemp("hftok")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer,
                                                eos_token="<|endoftext|>", pad_token="<|pad|>")
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="module", params=sorted(IMPORT_SHAPES))
def imported(request, hf_tokenizer, tmp_path_factory):
    """(HF dir, HF model, HF tokenizer, run dir) of a random LlamaForCausalLM saved by
    transformers and imported with `basegpt import hf`."""
    hf_dir = tmp_path_factory.mktemp(f"hf-{request.param}")
    for f in hf_tokenizer.iterdir():
        shutil.copy(f, hf_dir)
    hf_tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    config = transformers.LlamaConfig(vocab_size=len(hf_tok), max_position_embeddings=48,
                                      bos_token_id=0, eos_token_id=0, pad_token_id=1,
                                      **IMPORT_SHAPES[request.param])
    hf_model = transformers.LlamaForCausalLM(config).eval()
    _randomize(hf_model, seed=20 + sorted(IMPORT_SHAPES).index(request.param))
    hf_model.save_pretrained(hf_dir)
    run_dir = tmp_path_factory.mktemp(f"run-{request.param}") / "run"
    assert main(["import", "hf", str(hf_dir), str(run_dir)]) == 0
    return hf_dir, hf_model, hf_tok, run_dir


def test_import_gives_hf_ids_logits_and_greedy_tokens(imported, capsys):
    hf_dir, hf_model, hf_tok, run_dir = imported
    run = load_run(run_dir)
    assert run.tokenizer.token_ids is not None, "a `tokenizers` vocabulary is not basegpt's order"
    c, hf = run.model.config, hf_model.config
    assert (c.n_kv_head or c.n_head, c.n_k, c.n_v, c.bias, c.tie_weights, c.rope_base,
            c.norm_eps) == (hf.num_key_value_heads, hf.head_dim, hf.head_dim, hf.attention_bias,
                            hf.tie_word_embeddings, hf.rope_parameters["rope_theta"],
                            hf.rms_norm_eps)
    assert json.loads((run_dir / "config.json").read_text())["imported_from"]["format"] == \
        "hf-llama"
    _check_same_model(run.model, run.tokenizer, hf_model, hf_tok)


def test_export_of_import_reproduces_every_tensor_and_id_bit_for_bit(imported, tmp_path):
    hf_dir, _, _, run_dir = imported
    out = tmp_path / "again"
    assert main(["export", str(run_dir), "--format", "auto", str(out)]) == 0
    original, again = load_file(hf_dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert sorted(original) == sorted(again), "the same tensor names"
    for name, tensor in original.items():
        assert torch.equal(tensor, again[name]), f"{name} differs"
    src, new = (json.loads((d / "tokenizer.json").read_text()) for d in (hf_dir, out))

    def ids(data: dict) -> dict[str, int]:
        return data["model"]["vocab"] | {t["content"]: t["id"] for t in data["added_tokens"]}

    assert ids(new) == ids(src) and new["model"]["merges"] == src["model"]["merges"]
    src_config, new_config = (json.loads((d / "config.json").read_text()) for d in (hf_dir, out))
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "head_dim", "rms_norm_eps",
                "rope_parameters", "attention_bias", "mlp_bias", "tie_word_embeddings",
                "max_position_embeddings", "model_type", "architectures"):
        assert new_config[key] == src_config[key], key


def _edited_copy(imported, tmp_path, **changes):
    hf_dir = tmp_path / "hf"
    shutil.copytree(imported[0], hf_dir)
    config = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps(config | changes))
    return hf_dir


@pytest.mark.parametrize("changes, named", [
    (dict(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}),
     'rope_parameters={"rope_type": "linear"'),
    (dict(rope_scaling={"type": "dynamic", "factor": 2.0}), 'rope_scaling={"type": "dynamic"'),
    (dict(rope_parameters={"rope_type": "llama3", "factor": 8.0, "rope_theta": 5e5}),
     "llama3"),
    (dict(sliding_window=4), "sliding_window=4 (basegpt attends to the whole context"),
    (dict(hidden_act="gelu"), "hidden_act='gelu' (basegpt's SwiGLU gates with silu)"),
    (dict(attention_bias=True, mlp_bias=False),
     "attention_bias=True with mlp_bias=False"),
    (dict(model_type="mistral", architectures=["MistralForCausalLM"]), "unknown architecture"),
    (dict(architectures=["LlamaForSequenceClassification"]), "unknown architecture"),
])
def test_unsupported_llama_settings_are_one_line_cli_errors_naming_the_key(
        imported, tmp_path, capsys, changes, named):
    hf_dir = _edited_copy(imported, tmp_path, **changes)
    assert main(["import", "hf", str(hf_dir), str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and named in err and "config.json" in err, err
    assert not (tmp_path / "run").exists(), "nothing written"


def test_import_reads_llama_weights_with_the_same_safety(imported, tmp_path):
    """A pickle only with allow_pickle; a missing or misshapen tensor is named; early
    conversions' saved RoPE frequencies are not weights."""
    hf_dir, hf_model, _, run_dir = imported
    legacy = _edited_copy(imported, tmp_path)
    tensors = load_file(legacy / "model.safetensors")
    save_file(tensors | {"model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(4)},
              legacy / "model.safetensors", metadata={"format": "pt"})
    import_hf(legacy, tmp_path / "run1")
    a = load_file(tmp_path / "run1" / "model.safetensors")
    b = load_file(run_dir / "model.safetensors")
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in b), "same weights"

    save_file({k: v for k, v in tensors.items() if k != "model.layers.1.self_attn.k_proj.weight"},
              legacy / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"tensor model\.layers\.1\.self_attn\.k_proj\.weight "
                                         r"is missing \(expected shape \(\d+, 32\)"):
        import_hf(legacy, tmp_path / "run2")
    (legacy / "model.safetensors").unlink()
    torch.save(hf_model.state_dict(), legacy / "pytorch_model.bin")
    with pytest.raises(ValueError, match="allow_pickle"):
        import_hf(legacy, tmp_path / "run3")
    assert not (tmp_path / "run2").exists() and not (tmp_path / "run3").exists()
    assert import_hf(legacy, tmp_path / "run3", allow_pickle=True).pickled


# ------------------------------------------------------------------------ refusals

def _llama(**changes) -> ModelConfig:
    return ModelConfig(vocab_size=258, n_context=16, n_block=2, n_embed=32, n_head=4, n_k=8,
                       n_v=8, n_ff=48, bias=False, **LLAMA).replace(**changes)


@pytest.mark.parametrize("changes, named", [
    (dict(norm_position="post"), "norm_position='post' (needs 'pre')"),
    (dict(norm="layernorm"), "norm='layernorm' (needs 'rmsnorm')"),
    (dict(positional="learned"), "positional='learned' (needs 'rope')"),
    (dict(positional="sinusoidal"), "positional='sinusoidal' (needs 'rope')"),
    (dict(positional="none"), "positional='none' (needs 'rope')"),
    (dict(activation="gelu"), "activation='gelu' (needs 'swiglu')"),
    (dict(activation="relu"), "activation='relu' (needs 'swiglu')"),
    (dict(n_v=16), "n_v=16 (needs n_k=8"),
    (dict(n_head=3, n_k=8, n_v=8), "n_head=3 (needs a divisor of n_embed=32"),
    (dict(blocks=[{}, {"n_ff": 64}]), "blocks[1].n_ff=64 (needs 48"),
    (dict(blocks=[{"n_kv_head": 2}, {}]), "blocks[0].n_kv_head=2 (needs None"),
])
def test_each_non_llama_option_is_named_with_what_to_do(changes, named, tmp_path):
    config = _llama(**changes)
    with pytest.raises(ValueError, match="cannot be exported to Llama format") as error:
        export_llama((B2lM(config), Tokenizer()), tmp_path / "out")
    message = str(error.value)
    assert named in message, message
    assert re.search(r"nearest exportable preset is [\w-]+ .*: basegpt train --preset [\w-]+",
                     message), message
    assert not (tmp_path / "out").exists(), "nothing written"
    assert llama_incompatibilities(_llama(blocks=[{"attention": "manual"}, {}])) == [], \
        "the attention kernel does not change the numbers"


def test_a_model_no_hf_architecture_expresses_lists_both_and_the_preset():
    seed_like = ModelConfig(vocab_size=258, n_embed=32, n_head=4, n_k=8, n_v=16)  # post, relu
    # (laptop, ~0.3M parameters at this vocabulary, is the exportable preset nearest in size
    # to this ~0.04M model; gpt2-small is ~85M.)
    with pytest.raises(ValueError) as error:
        hf_format(seed_like)
    message = str(error.value)
    for part in ("As GPT-2: norm_position='post' (needs 'pre')", "activation='relu' (needs 'gelu')",
                 "n_v=16 (needs 8 = n_embed / n_head)", "As Llama: norm_position='post'",
                 "activation='relu' (needs 'swiglu')", "n_v=16 (needs n_k=8",
                 "basegpt train --preset laptop"):
        assert part in message, f"{part!r} not in {message}"
    assert hf_format(_llama()) == "llama"
    assert hf_format(_llama(norm="layernorm", positional="learned", activation="gelu",
                            bias=True, n_ff=64)) == "gpt2", "GPT-2 first: more tools read it"


def test_a_model_that_fits_the_other_format_is_pointed_there(tmp_path):
    with pytest.raises(ValueError, match=r"It exports to Llama format as it is: basegpt export "
                                         r"RUN --format llama OUT"):
        export_hf((B2lM(_llama()), Tokenizer()), tmp_path / "gpt2")
    gpt2_like = _llama(norm="layernorm", positional="learned", activation="gelu", bias=True)
    with pytest.raises(ValueError, match=r"It exports to GPT-2 format as it is: basegpt export "
                                         r"RUN --format hf OUT"):
        export_llama((B2lM(gpt2_like), Tokenizer()), tmp_path / "llama")


# ------------------------------------------------------------------------ presets and CLI

def _preset_run(tmp_path, preset: str):
    from basegpt.recipe import check_spec, resolve_spec
    model = check_spec(resolve_spec(preset))[0].replace(vocab_size=258)
    run = tmp_path / preset
    save_run(run, B2lM(model), Tokenizer())
    return run


def test_a_seed_run_is_refused_with_the_command_that_trains_the_main_jobs_llama(tmp_path,
                                                                              capsys):
    run = _preset_run(tmp_path, "seed")
    for fmt, named in (("hf", "positional='sinusoidal' (needs 'learned')"),
                       ("llama", "activation='relu' (needs 'swiglu')"),
                       ("auto", "As Llama: norm_position='post' (needs 'pre')")):
        assert main(["export", str(run), "--format", fmt, str(tmp_path / "out")]) == 2, fmt
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and named in err, err
        assert "nearest exportable preset is laptop (Llama format; it sets " in err, err
        assert "train one with: basegpt train --preset laptop (adding" in err, err
    assert not (tmp_path / "out").exists(), "nothing written"


def test_the_main_job_is_an_exportable_llama_the_size_of_the_gelu_block_it_replaced(
        capsys, monkeypatch):
    """The laptop preset (`basegpt train` with no arguments) is a Llama as it is, with
    SwiGLU at the parameters of the GELU FF 512 it replaced (BENCHMARKS.md: it learned as
    well in the same 4 minutes)."""
    from basegpt import recipe
    laptop = recipe.load_preset("laptop")
    config = recipe.check_spec(recipe.resolve_spec("laptop"))[0].replace(
        vocab_size=laptop["data"]["vocab_size"])
    assert llama_incompatibilities(config) == []
    assert config.activation == "swiglu"
    gelu = config.replace(activation="gelu", n_ff=512)
    with torch.device("meta"):
        n, n_gelu = B2lM(config).num_parameters(), B2lM(gelu).num_parameters()
    assert abs(n / n_gelu - 1) < 0.001, (n, n_gelu)
    assert f"{n:,} parameters" in laptop["description"], "the description's count"

    seen = {}

    class Stop(Exception):
        pass

    def fake_train_run(spec, out, **kwargs):     # what `basegpt train` would run, not run
        seen.update(spec=spec, out=out)
        raise Stop

    monkeypatch.setattr(recipe, "train_run", fake_train_run)
    with pytest.raises(Stop):
        main(["train"])
    assert seen["spec"]["model"]["activation"] == "swiglu" and str(seen["out"]) == \
        os.path.join("runs", "laptop"), seen


def test_cli_export_llama_and_auto_say_what_they_wrote(tmp_path, capsys):
    run = _preset_run(tmp_path, "laptop")
    assert main(["export", str(run), "--format", "llama", str(tmp_path / "a")]) == 0
    assert "in Llama format" in capsys.readouterr().out
    assert main(["export", str(run), "--format", "auto", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "in Llama format" in out and "LlamaForCausalLM.from_pretrained" in out, out
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    gpt2 = tmp_path / "gpt2-run"
    save_run(gpt2, B2lM(_llama(norm="layernorm", positional="learned", activation="gelu",
                               bias=True)), Tokenizer())
    path, architecture = export_auto(gpt2, tmp_path / "c")
    assert architecture == "gpt2" and json.loads((path / "config.json").read_text())[
        "model_type"] == "gpt2"
    assert main(["import", "hf", str(tmp_path / "b"), str(tmp_path / "back")]) == 0
    assert "(Llama, model.safetensors)" in capsys.readouterr().out


def test_a_config_json_that_is_not_an_object_is_a_one_line_error(imported, tmp_path, capsys):
    hf_dir = _edited_copy(imported, tmp_path)
    (hf_dir / "config.json").write_text("[1, 2]\n")
    assert main(["import", "hf", str(hf_dir), str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config.json holds a list, not a model config" in err, err
