"""Hugging Face GPT-2 interop: export and import give the same ids, logits and greedy tokens;
every command works on an imported run, and `train --init-from` fine-tunes one.

Every HF model here is a random-init GPT2LMHeadModel built by transformers in the test and
saved with save_pretrained; every HF tokenizer is trained with `tokenizers` in the test.
Nothing is downloaded (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import json
import math
import os
import shutil

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

os.environ["HF_HUB_OFFLINE"] = "1"
transformers = pytest.importorskip("transformers", reason="transformers is a test extra")
tokenizers = pytest.importorskip("tokenizers", reason="tokenizers is a test extra")
tiktoken = pytest.importorskip("tiktoken", reason="tiktoken is a test extra")

from basegpt import B2lM, Tokenizer  # noqa: E402
from basegpt.checkpoint import load_run, save_run  # noqa: E402
from basegpt.cli import main  # noqa: E402
from basegpt.config import ModelConfig  # noqa: E402
from basegpt.corpus import builtin_corpus  # noqa: E402
from basegpt.interop.hf_files import read_hf_tokenizer  # noqa: E402
from basegpt.interop.hf import export_hf, import_hf  # noqa: E402
from basegpt.interop.hf_gpt2 import gpt2_incompatibilities  # noqa: E402
from basegpt.interop.tokenizers import load_tiktoken  # noqa: E402

TEXT = ("Hello, world! Ça va? Grüße aus Köln. Привет, мир. 你好，世界。こんにちは。안녕하세요. "
        "مرحبا بالعالم. नमस्ते दुनिया. Ελληνικά. 😀👍🏽 e\u0301 ﬁ ½ Ⅻ\n"
        "def add(a, b):\n    return a + b  # it's they'll\n\tx = 12345678; y = 3.14\r\n  end ſ K\n")
unicode_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)

# (HF config fields, basegpt tokenizer pattern for the export direction). Vocabularies are
# ~420 tokens, so every n_positions is smaller than the vocabulary.
SHAPES = {
    "tied-4heads": (dict(n_embd=32, n_layer=2, n_head=4, n_positions=96,
                         tie_word_embeddings=True), "gpt4"),
    "untied-3heads": (dict(n_embd=48, n_layer=2, n_head=3, n_positions=80, n_inner=64,
                           tie_word_embeddings=False), "gpt2"),
    "untied-8heads": (dict(n_embd=64, n_layer=3, n_head=8, n_positions=72,
                           layer_norm_epsilon=1e-6, tie_word_embeddings=False), "gpt4"),
}
INIT_STD = 0.1     # wider than GPT-2's 0.02: well-separated logits, so greedy never meets a near-tie
ATOL = RTOL = 1e-5


def _docs() -> list[str]:
    return list(builtin_corpus(40_000)) + [TEXT * 3]


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory):
    """A byte-level BPE trained by `tokenizers`: special tokens first, then its own byte order,
    so its ids are NOT basegpt's layout. Saved as transformers saves it."""
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(_docs(), vocab_size=420, show_progress=False,
                            special_tokens=["<|endoftext|>", "<|pad|>"])
    path = tmp_path_factory.mktemp("hftok")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer,
                                                eos_token="<|endoftext|>",
                                                bos_token="<|endoftext|>", pad_token="<|pad|>")
    fast.save_pretrained(path)
    return path


def _hf_ids(hf_tok, text: str) -> list[int]:
    # basegpt encodes special-token text as ordinary text; HF's equivalent switch:
    backend = hf_tok.backend_tokenizer
    backend.encode_special_tokens = True
    try:
        return backend.encode(text, add_special_tokens=False).ids
    finally:
        backend.encode_special_tokens = False     # HF's default again, for hf_tok(text)


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


def _check_same_model(model: B2lM, tok: Tokenizer, hf_model, hf_tok) -> None:
    """The three checks, on the very same ids: ids on text, logits on random ids and on
    text, greedy 50 tokens."""
    ids = tok.encode(TEXT)
    assert ids == hf_tok(TEXT).input_ids, "basegpt's tokenizer gives the HF tokenizer's ids"
    T = model.config.n_context
    g = torch.Generator().manual_seed(0)
    random_ids = torch.randint(0, model.config.vocab_size, (2, T), generator=g)
    with torch.no_grad():
        for x in (random_ids, torch.tensor([ids[:T]])):
            torch.testing.assert_close(model(x), hf_model(x).logits, atol=ATOL, rtol=RTOL)
    prompt = ids[:12]
    assert _greedy(model, prompt, 50) == _hf_greedy(hf_model, prompt, 50), \
        "greedy decoding gives the same 50 tokens"


def _hf_model(fields: dict, vocab_size: int, seed: int):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=vocab_size, initializer_range=INIT_STD,
                                     bos_token_id=0, eos_token_id=0, pad_token_id=1, **fields)
    return transformers.GPT2LMHeadModel(config).eval()


def _save_hf(hf_tokenizer, hf_dir, fields: dict, seed: int):
    """(HF model, HF tokenizer) of a random-init GPT-2, saved into hf_dir by transformers."""
    for f in hf_tokenizer.iterdir():
        shutil.copy(f, hf_dir)
    hf_tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    hf_model = _hf_model(fields, len(hf_tok), seed)
    hf_model.save_pretrained(hf_dir)
    return hf_model, hf_tok


# ------------------------------------------------------------------------ import

@pytest.fixture(scope="module", params=sorted(SHAPES))
def imported(request, hf_tokenizer, tmp_path_factory):
    """(HF dir, HF model, HF tokenizer, run dir, import result) for one shape."""
    fields, _ = SHAPES[request.param]
    hf_dir = tmp_path_factory.mktemp(f"hf-{request.param}")
    hf_model, hf_tok = _save_hf(hf_tokenizer, hf_dir, fields,
                                seed=sorted(SHAPES).index(request.param))
    run_dir = tmp_path_factory.mktemp(f"run-{request.param}") / "run"
    result = import_hf(hf_dir, run_dir)
    return hf_dir, hf_model, hf_tok, run_dir, result


def test_import_gives_hf_ids_logits_and_greedy_tokens(imported):
    hf_dir, hf_model, hf_tok, run_dir, result = imported
    run = load_run(run_dir)
    assert run.tokenizer.token_ids is not None, "a `tokenizers` vocabulary is not basegpt's order"
    assert len(run.tokenizer) == hf_model.config.vocab_size == len(hf_tok)
    assert "hf_token_ids" not in json.loads((run_dir / "config.json").read_text()), "no id map"
    assert run.tokenizer.eot_id == hf_tok.eos_token_id and run.tokenizer.pad_id == hf_tok.pad_token_id
    vocab = hf_tok.backend_tokenizer.get_vocab()
    assert all(run.tokenizer.decode([i]) == hf_tok.decode([i]) for i in vocab.values()), \
        "every id spells the same text in both"
    _check_same_model(run.model, run.tokenizer, hf_model, hf_tok)
    torch.testing.assert_close(run.model.tok_emb.weight, hf_model.transformer.wte.weight,
                               atol=0, rtol=0, msg="embedding rows copied, not permuted")


def test_export_of_import_reproduces_every_tensor_bit_for_bit(imported, tmp_path):
    hf_dir, hf_model, hf_tok, run_dir, _ = imported
    export_hf(run_dir, tmp_path)
    original, again = load_file(hf_dir / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    assert sorted(original) == sorted(again), "the same tensor names"
    for name, tensor in original.items():
        assert torch.equal(tensor, again[name]), f"{name} differs"
    src, out = (json.loads((d / "tokenizer.json").read_text()) for d in (hf_dir, tmp_path))

    def ids(data: dict) -> dict[str, int]:     # `tokenizers` also lists added tokens in the vocab
        return data["model"]["vocab"] | {t["content"]: t["id"] for t in data["added_tokens"]}

    assert ids(out) == ids(src), "the same HF id for every token"
    assert out["model"]["merges"] == src["model"]["merges"], "the same merges"
    src_config, out_config = (json.loads((d / "config.json").read_text()) for d in (hf_dir, tmp_path))
    for key in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "tie_word_embeddings",
                "layer_norm_epsilon"):
        assert out_config[key] == src_config[key], key


@settings(max_examples=60, deadline=None)
@given(text=unicode_text)
@example(text="one<|endoftext|>two")     # special-token text: ordinary text unless allowed
def test_imported_tokenizer_gives_hf_ids_on_random_strings(imported, text):
    _, _, hf_tok, run_dir, _ = imported
    tok = Tokenizer.load(run_dir / "tokenizer.json")
    assert tok.encode(text) == _hf_ids(hf_tok, text), f"differs on {text!r}"
    assert tok.encode(text, allowed_special="all") == hf_tok(text).input_ids, \
        f"differs on {text!r} with special tokens allowed (HF's default)"


def test_vocab_json_and_merges_txt_give_the_same_tokenizer(hf_tokenizer, tmp_path):
    data = json.loads((hf_tokenizer / "tokenizer.json").read_text())
    bpe = tokenizers.models.BPE(data["model"]["vocab"], [tuple(m) for m in data["model"]["merges"]])
    written = sorted(os.path.basename(p) for p in bpe.save(str(tmp_path)))
    assert written == ["merges.txt", "vocab.json"], written
    shutil.copy(hf_tokenizer / "tokenizer_config.json", tmp_path)
    from_files, from_json = read_hf_tokenizer(tmp_path), read_hf_tokenizer(hf_tokenizer)
    assert from_json.token_ids is not None, "HF's ids are not native: the numbering is kept"
    assert from_files.hash == from_json.hash, "same merges, specials and numbering (hashed)"


def test_legacy_pickle_loads_only_when_allowed(imported, tmp_path, capsys):
    hf_dir, hf_model, _, run_dir, _ = imported
    legacy = tmp_path / "legacy"
    shutil.copytree(hf_dir, legacy)
    (legacy / "model.safetensors").unlink()
    torch.save(hf_model.state_dict(), legacy / "pytorch_model.bin")
    with pytest.raises(ValueError, match="allow_pickle"):
        import_hf(legacy, tmp_path / "run")
    assert main(["import", "hf", str(legacy), str(tmp_path / "run"), "--allow-pickle"]) == 0
    err = capsys.readouterr().err
    assert "pickle" in err and "safetensors" in err and "CVE" in err, "the CLI says why"
    a, b = load_file(tmp_path / "run" / "model.safetensors"), load_file(run_dir / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in b), "the same weights as from safetensors"



def test_original_gpt2_tensor_names_and_mask_buffers_are_understood(imported, tmp_path):
    """The original GPT-2 files name tensors without "transformer." and carry causal-mask
    buffers (h.N.attn.bias); they import to the same weights."""
    hf_dir, _, _, run_dir, _ = imported
    legacy = tmp_path / "legacy"
    shutil.copytree(hf_dir, legacy)
    tensors = load_file(legacy / "model.safetensors")
    renamed = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    renamed["h.0.attn.bias"] = torch.ones(1, 1, 4, 4).tril()
    save_file(renamed, legacy / "model.safetensors", metadata={"format": "pt"})
    import_hf(legacy, tmp_path / "run")
    a, b = load_file(tmp_path / "run" / "model.safetensors"), load_file(run_dir / "model.safetensors")
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in b), "same weights"

# ------------------------------------------------------------------------ export

@pytest.fixture(scope="module")
def basegpt_tokenizers():
    return {p: Tokenizer(vocab_size=420, pattern=p).train(_docs(), progress=False)
            for p in ("gpt2", "gpt4")}


@pytest.fixture(scope="module", params=sorted(SHAPES))
def exported(request, basegpt_tokenizers, tmp_path_factory):
    fields, pattern = SHAPES[request.param]
    tok = basegpt_tokenizers[pattern]
    torch.manual_seed(10 + sorted(SHAPES).index(request.param))
    C, H = fields["n_embd"], fields["n_head"]
    model = B2lM(vocab_size=len(tok), n_context=fields["n_positions"], n_block=fields["n_layer"],
                 n_embed=C, n_head=H, n_k=C // H, n_v=C // H, n_ff=fields.get("n_inner", 4 * C),
                 norm_position="pre", positional="learned", activation="gelu",
                 norm_eps=fields.get("layer_norm_epsilon", 1e-5), init_std=INIT_STD,
                 tie_weights=fields["tie_word_embeddings"]).eval()
    run_dir = tmp_path_factory.mktemp(f"bg-{request.param}")
    save_run(run_dir, model, tok)
    out = tmp_path_factory.mktemp(f"bg-hf-{request.param}")
    assert main(["export", str(run_dir), "--format", "hf", str(out)]) == 0
    hf_model = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    return model, tok, hf_model, hf_tok, run_dir, out


def test_export_loads_in_transformers_with_the_same_ids_logits_and_tokens(exported):
    model, tok, hf_model, hf_tok, _, out = exported
    assert hf_tok.eos_token == hf_tok.bos_token == "<|endoftext|>" and hf_tok.pad_token == "<|pad|>"
    assert hf_model.config.eos_token_id == tok.eot_id and hf_model.config.pad_token_id == tok.pad_id
    assert (hf_model.lm_head.weight is hf_model.transformer.wte.weight) == model.config.tie_weights
    _check_same_model(model, tok, hf_model, hf_tok)


@settings(max_examples=60, deadline=None)
@given(text=unicode_text)
@example(text="one<|endoftext|>two")     # special-token text: ordinary text unless allowed
def test_exported_tokenizer_gives_basegpt_ids_on_random_strings(exported, text):
    _, tok, _, hf_tok, _, _ = exported
    assert _hf_ids(hf_tok, text) == tok.encode(text), f"differs on {text!r}"


def test_import_of_export_keeps_ids_identical(exported, tmp_path):
    model, tok, _, _, _, out = exported
    import_hf(out, tmp_path / "run")
    run = load_run(tmp_path / "run")
    assert run.tokenizer.token_ids is None, "basegpt's own export has native ids: no numbering"
    assert run.tokenizer.hash == tok.hash, "the very same tokenizer"
    for name, tensor in model.state_dict().items():
        assert torch.equal(run.model.state_dict()[name], tensor), name


def test_tiktoken_rank_file_gives_basegpt_ids(exported, imported, tmp_path):
    for run_dir, name in ((exported[4], "exported"), (imported[3], "imported")):
        tok = Tokenizer.load(run_dir / "tokenizer.json")
        assert main(["export", str(run_dir), "--format", "tiktoken", str(tmp_path / name)]) == 0
        encoding = load_tiktoken(tmp_path / name / "tokenizer.tiktoken")
        for text in (TEXT, "".join(builtin_corpus(5_000, skip_bytes=1_000_000))):
            assert encoding.encode_ordinary(text) == tok.encode(text), f"{name} run"


# ------------------------------------------------------------------------ errors

def _compatible(**changes) -> ModelConfig:
    base = ModelConfig(vocab_size=258, n_context=16, n_block=2, n_embed=32, n_head=4, n_k=8, n_v=8,
                       n_ff=64, norm_position="pre", positional="learned", activation="gelu")
    return base.replace(**changes)


@pytest.mark.parametrize("changes, named", [
    (dict(norm_position="post"), "norm_position='post' (needs 'pre')"),
    (dict(positional="rope"), "positional='rope' (needs 'learned')"),
    (dict(positional="sinusoidal"), "positional='sinusoidal' (needs 'learned')"),
    (dict(activation="swiglu"), "activation='swiglu' (needs 'gelu')"),
    (dict(activation="relu"), "activation='relu' (needs 'gelu')"),
    (dict(norm="rmsnorm"), "norm='rmsnorm' (needs 'layernorm')"),
    (dict(bias=False), "bias=False (needs True)"),
    (dict(n_kv_head=2), "n_kv_head=2 (needs None"),
    (dict(n_k=16), "n_k=16 (needs 8 = n_embed / n_head)"),
    (dict(n_v=4), "n_v=4 (needs 8 = n_embed / n_head)"),
    (dict(n_head=3, n_k=8, n_v=8), "n_head=3 (needs a divisor of n_embed=32)"),
    (dict(blocks=[{}, {"n_ff": 128}]), "blocks[1].n_ff=128 (needs 64"),
])
def test_each_non_exportable_option_is_named(changes, named, tmp_path):
    config = _compatible(**changes)
    tok = Tokenizer()            # untrained: 256 bytes + 2 special tokens
    with pytest.raises(ValueError, match="cannot be exported") as error:
        export_hf((B2lM(config), tok), tmp_path)
    assert named in str(error.value), str(error.value)
    assert not (tmp_path / "model.safetensors").exists(), "nothing written"


def test_every_incompatible_field_is_listed_at_once():
    problems = "; ".join(gpt2_incompatibilities(ModelConfig()))   # the original design's model
    for field in ("norm_position", "positional", "activation"):
        assert field in problems, problems
    assert gpt2_incompatibilities(_compatible(blocks=[{"attention": "manual"}, {}])) == [], \
        "the attention kernel does not change the numbers"


def test_a_non_exportable_run_is_a_one_line_cli_error(tmp_path, capsys):
    tok = Tokenizer()            # untrained: 256 bytes + 2 special tokens
    save_run(tmp_path / "run", B2lM(_compatible(norm="rmsnorm")), tok)
    assert main(["export", str(tmp_path / "run"), "--format", "hf", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "norm='rmsnorm' (needs 'layernorm')" in err and err.count("\n") == 1, err


def _broken_copy(imported, tmp_path):
    hf_dir = tmp_path / "hf"
    shutil.copytree(imported[0], hf_dir)
    return hf_dir


def test_import_errors_name_the_problem(imported, tmp_path):
    hf_dir = _broken_copy(imported, tmp_path)
    config = json.loads((hf_dir / "config.json").read_text())
    tensors = load_file(hf_dir / "model.safetensors")

    def fails(match, **kw):
        with pytest.raises((ValueError, FileNotFoundError), match=match):
            import_hf(hf_dir, tmp_path / "run", **kw)

    (hf_dir / "config.json").write_text(json.dumps(config | {"model_type": "mistral",
                                                             "architectures": ["MistralForCausalLM"]}))
    fails(r"unknown architecture.*imports GPT-2 models .* and Llama models \(LlamaForCausalLM\)")
    (hf_dir / "config.json").write_text(json.dumps(config | {"activation_function": "gelu"}))
    fails("activation_function='gelu'")
    (hf_dir / "config.json").write_text(json.dumps(config | {"n_inner": 40}))
    fails(r"tensor transformer\.h\.0\.mlp\.c_fc\.weight has shape .* needs \(%d, 40\)"
          % config["n_embd"])
    (hf_dir / "config.json").write_text(json.dumps(config))
    save_file({k: v for k, v in tensors.items() if k != "transformer.h.1.ln_2.bias"},
              hf_dir / "model.safetensors", metadata={"format": "pt"})
    fails(r"tensor transformer\.h\.1\.ln_2\.bias is missing \(expected shape \(%d,\)"
          % config["n_embd"])
    (hf_dir / "model.safetensors").unlink()
    fails("has no weights.*never downloads")
    with pytest.raises(FileNotFoundError, match="never downloads"):
        import_hf("gpt2", tmp_path / "run")
    assert not (tmp_path / "run" / "config.json").exists(), "no half-written run"


def test_export_or_import_into_a_file_is_a_one_line_error_before_any_work(imported, tmp_path,
                                                                          capsys):
    hf_dir, _, _, run_dir, _ = imported
    (tmp_path / "taken").write_text("not a folder")
    for args in (["export", str(run_dir), "--format", "hf", str(tmp_path / "taken")],
                 ["export", str(run_dir), "--format", "hf", str(tmp_path / "taken" / "sub")],
                 ["export", str(run_dir), "--format", "tiktoken", str(tmp_path / "taken")],
                 ["import", "hf", str(hf_dir), str(tmp_path / "taken")]):
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{tmp_path / 'taken'}" in err and "is a file" in err, err
    # Before any work: the path is refused before the run is checked or the weights are read.
    save_run(tmp_path / "rms", B2lM(_compatible(norm="rmsnorm")), Tokenizer())
    with pytest.raises(ValueError, match="taken is a file"):
        export_hf(tmp_path / "rms", tmp_path / "taken")
    no_weights = _broken_copy(imported, tmp_path)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="taken is a file"):
        import_hf(no_weights, tmp_path / "taken")
    assert (tmp_path / "taken").read_text() == "not a folder", "the file is left alone"


def test_a_git_lfs_pointer_is_an_error_saying_so(imported, tmp_path):
    hf_dir = _broken_copy(imported, tmp_path)
    (hf_dir / "model.safetensors").write_text(
        "version https://git-lfs.github.com/spec/v1\n"
        "oid sha256:4c2e6d2b3c6f0f7a0a1d8b0f1e0b1d7c2c9f7a3f0b8e7d6c5b4a39281706f5e4\n"
        "size 548105171\n")
    with pytest.raises(ValueError, match=r"Git LFS pointer, not the weights.*git lfs pull"):
        import_hf(hf_dir, tmp_path / "run")
    assert not (tmp_path / "run" / "config.json").exists(), "no half-written run"


# ------------------------------------------------------------------------ presets

def test_gpt2_small_preset_and_the_documented_flags_make_exportable_models():
    """docs/interop.md's claims: gpt2-small exports as it is; the seed preset needs
    --norm-position pre --positional learned --activation gelu. (The laptop preset is a
    Llama: tests/test_interop_hf_llama.py.)"""
    from basegpt.recipe import check_spec, resolve_spec

    def problems(preset, **model):
        config = check_spec(resolve_spec(preset, overrides={"model": model}))[0]
        return gpt2_incompatibilities(config)

    assert problems("gpt2-small") == [], problems("gpt2-small")
    seed = dict(norm_position="pre", positional="learned", activation="gelu")
    assert problems("seed", **seed) == [], problems("seed", **seed)
    assert problems("seed", **seed, norm="rmsnorm") == ["norm='rmsnorm' (needs 'layernorm')"]


# ------------------------------------------------------------------------ fine-tuning

FINE_TUNE_TEXT = "def add(a, b):\n    return a + b\n\n\nclass Point:\n    x: int = 0\n\n" * 150
SCORED = "def add(a, b):\n    return a + b\n\n\nclass Point:\n    x: int = 0\n"


@pytest.fixture(scope="module")
def hf_run(hf_tokenizer, tmp_path_factory):
    """(HF dir, HF model, HF tokenizer, run dir): one imported shape, for the command lines."""
    hf_dir = tmp_path_factory.mktemp("hf-cli")
    hf_model, hf_tok = _save_hf(hf_tokenizer, hf_dir, SHAPES["tied-4heads"][0], seed=7)
    run_dir = tmp_path_factory.mktemp("run-cli") / "run"
    assert main(["import", "hf", str(hf_dir), str(run_dir)]) == 0
    return hf_dir, hf_model, hf_tok, run_dir


def _eval_loss(run_dir, capsys) -> float:
    assert main(["eval", str(run_dir), "--text", SCORED, "--json", "--device", "cpu"]) == 0
    return json.loads(capsys.readouterr().out)["loss"]


def test_train_init_from_an_imported_run_fine_tunes_it(hf_run, tmp_path, capsys, monkeypatch,
                                                      step0_weights):
    _, _, _, run_dir = hf_run
    monkeypatch.setenv("BASEGPT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "code.txt").write_text(FINE_TUNE_TEXT, encoding="utf-8")
    at_step_0 = step0_weights
    before = _eval_loss(run_dir, capsys)
    new = tmp_path / "tuned"
    assert main(["train", "--init-from", str(run_dir), str(tmp_path / "code.txt"),
                 "--out", str(new), "--max-steps", "12", "--lr", "0.005", "--warmup-steps", "0",
                 "--batch-size", "8", "--attn-dropout", "0", "--device", "cpu", "--quiet"]) == 0
    assert "trained 12 steps" in capsys.readouterr().out

    imported_weights = load_file(run_dir / "model.safetensors")
    assert sorted(at_step_0) == sorted(imported_weights), "the same tensors"
    for name, tensor in imported_weights.items():
        assert torch.equal(at_step_0[name], tensor), f"{name}: step 0 is the imported weights"
    after = _eval_loss(new, capsys)
    assert after < before - 0.5, f"fine-tuning lowers the loss on its text: {before} -> {after}"
    config = json.loads((new / "config.json").read_text())
    assert config["init_from"]["path"] == str(run_dir.resolve()), config["init_from"]
    assert json.loads((new / "run.json").read_text())[0]["init_from"] == str(run_dir.resolve())
    assert config["model"] == {**json.loads((run_dir / "config.json").read_text())["model"],
                               "attn_dropout": 0.0}, "the imported model, dropout as asked"
    assert Tokenizer.load(new / "tokenizer.json").hash == config["tokenizer_hash"] == \
        json.loads((run_dir / "config.json").read_text())["tokenizer_hash"], "the HF tokenizer"

    assert main(["info", str(new)]) == 0
    assert f"fine-tuned from: {run_dir.resolve()}" in capsys.readouterr().out
    assert main(["generate", str(new), "--prompt", "def ", "--max-new-tokens", "8",
                 "--temperature", "0", "--no-stream", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.startswith("def "), "the new run generates"
    assert main(["export", str(new), "--format", "hf", str(tmp_path / "hf-tuned")]) == 0
    hf_tuned = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf-tuned").eval()
    ids = torch.tensor([load_run(new).tokenizer.encode(SCORED)])
    with torch.no_grad():
        torch.testing.assert_close(hf_tuned(ids).logits, load_run(new).model(ids),
                                   atol=ATOL, rtol=RTOL)


def test_init_from_refuses_a_new_shape_another_tokenizer_and_resume(hf_run, tmp_path, capsys):
    _, _, _, run_dir = hf_run
    Tokenizer().save(tmp_path / "bytes.json")
    for extra, words in (
            (["--n-embed", "64", "--n-block", "2"], ["n_embed=64 (the source has 32)"]),
            (["--tokenizer", str(tmp_path / "bytes.json")], ["bytes.json", "drop --tokenizer"]),
            (["--resume", str(run_dir)], ["--resume", "one of them"])):
        assert main(["train", "--init-from", str(run_dir), "--out", str(tmp_path / "r"),
                     "--max-steps", "1", *extra]) == 2, extra
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and all(w in err for w in words), err
        assert "n_block" not in err, f"a setting equal to the source's is no conflict: {err}"
    assert not (tmp_path / "r").exists(), "refused before anything is written"


@pytest.mark.slow      # four Python processes that each import torch: ~15 s on 2 busy cores
def test_every_command_works_on_an_imported_run(hf_run, tmp_path):
    import subprocess
    import sys
    _, hf_model, hf_tok, run_dir = hf_run
    env = {**os.environ, "BASEGPT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}

    def basegpt(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "basegpt", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, \
            f"{' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
        return proc.stdout

    prompt = "def add(a, b):"
    ids = hf_tok(prompt).input_ids
    with torch.no_grad():
        hf_new = hf_model.generate(torch.tensor([ids]), max_new_tokens=30, do_sample=False,
                                   pad_token_id=hf_tok.pad_token_id)[0, len(ids):].tolist()
    if hf_tok.eos_token_id in hf_new:                  # both stop at the end-of-text token
        hf_new = hf_new[:hf_new.index(hf_tok.eos_token_id)]
    assert len(hf_new) >= 10, f"a continuation long enough to compare: {hf_new}"
    out = basegpt("generate", str(run_dir), "--prompt", prompt, "--max-new-tokens", "30",
                  "--temperature", "0", "--no-stream", "--device", "cpu")
    assert out == prompt + hf_tok.decode(hf_new) + "\n", f"greedy: {out!r}, HF: {hf_new}"

    scores = json.loads(basegpt("eval", str(run_dir), "--text", SCORED, "--json",
                                "--device", "cpu"))
    x = torch.tensor([hf_tok(SCORED).input_ids])
    assert x.shape[1] <= hf_model.config.n_positions, "one window, as HF scores it"
    with torch.no_grad():
        hf_loss = hf_model(x, labels=x).loss.item()   # mean cross-entropy of each next token
    assert math.isclose(scores["loss"], hf_loss, rel_tol=1e-5), (scores, hf_loss)
    assert scores["tokens"] == x.shape[1] - 1, scores

    info = basegpt("info", str(run_dir))
    n_params = sum(p.numel() for p in hf_model.parameters())       # the tied head counts once
    for phrase in (f"parameters: {n_params:,}", "learned positions", "tied weights True",
                   "head        tied to the embedding", "block 1", "matches the model",
                   f"vocab {len(hf_tok)}"):
        assert phrase in info, f"{phrase!r} not in info's output:\n{info}"

    attention = basegpt("attention", str(run_dir), "--prompt", prompt, "--out", "x.png")
    assert (tmp_path / "x.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", attention
    n_layer, n_head = hf_model.config.n_layer, hf_model.config.n_head
    assert attention.count("  layer ") == n_layer * n_head, attention
    assert f"tokens ({len(ids)})" in attention, f"HF's {len(ids)} tokens: {attention}"
