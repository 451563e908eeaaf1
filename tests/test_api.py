"""The public API's conveniences (basegpt/api.py): the original design's model.train(loader,
epochs=N), and a loaded run that generates; and the import graph they keep one-way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import basegpt
import basegpt.api
from basegpt import Tokenizer
from basegpt.checkpoint import save_run
from basegpt.config import ModelConfig
from basegpt.generate import generate

PACKAGE = Path(basegpt.__file__).parent


def _model(**kw) -> basegpt.api.B2lM:
    torch.manual_seed(0)
    return basegpt.api.B2lM(ModelConfig(vocab_size=260, n_embed=16, n_block=1, n_head=2, n_k=8,
                                        n_v=8, n_ff=16, **kw))


def test_the_public_b2lm_is_the_one_that_trains():
    assert basegpt.B2lM is basegpt.api.B2lM
    assert issubclass(basegpt.B2lM, basegpt.model.B2lM), "everything that takes a B2lM takes it"


def test_train_with_bool_or_nothing_keeps_pytorch_meaning():
    model = _model()
    assert model.train() is model and model.training
    assert model.train(False) is model and not model.training
    with pytest.raises(TypeError, match="takes no other arguments"):
        model.train(True, epochs=3)


def test_train_with_data_calls_fit_with_the_settings(monkeypatch):
    calls = []
    monkeypatch.setattr(basegpt.api, "fit",
                        lambda model, data, **kw: calls.append((model, data, kw)) or "history")
    model = _model()
    loader = [(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long))]
    assert model.train(loader, epochs=10, lr=1e-3) == "history", "train(data) returns fit's result"
    assert calls == [(model, loader, {"epochs": 10, "lr": 1e-3})], calls


def test_a_loaded_run_generates_and_its_model_trains(tmp_path: Path):
    tokenizer = Tokenizer(vocab_size=260).train("hello world " * 20, progress=False)
    model = _model()
    save_run(tmp_path / "run", model, tokenizer)
    run = basegpt.load_run(tmp_path / "run")
    assert type(run.model) is basegpt.api.B2lM, "the model of a loaded run can train itself"
    assert run.generate("hello", max_new_tokens=5, temperature=0) == generate(
        model, tokenizer, "hello", max_new_tokens=5, temperature=0), "Run.generate = generate"


def _imports(path: Path) -> set[str]:
    """Every basegpt module a file imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("basegpt"):
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("basegpt"))
    return names


@pytest.mark.parametrize("lower, upper", [
    ("model", ("basegpt.train", "basegpt.generate", "basegpt.api", "basegpt.recipe",
               "basegpt.cli", "basegpt.checkpoint")),
    ("checkpoint.py", ("basegpt.train", "basegpt.generate", "basegpt.api", "basegpt.recipe",
                       "basegpt.cli")),
    ("train.py", ("basegpt.api", "basegpt.recipe", "basegpt.cli", "basegpt.generate")),
    ("generate.py", ("basegpt.api", "basegpt.recipe", "basegpt.cli", "basegpt.train")),
    ("serve", ("basegpt.cli", "basegpt.train", "basegpt.recipe")),
])
def test_imports_point_one_way(lower: str, upper: tuple[str, ...]):
    files = sorted((PACKAGE / lower).rglob("*.py")) if (PACKAGE / lower).is_dir() \
        else [PACKAGE / lower]
    for path in files:
        # A module or what it holds: basegpt.train and basegpt.train.fit, not basegpt.train_state.
        wrong = sorted(n for n in _imports(path)
                       if any(n == u or n.startswith(u + ".") for u in upper))
        assert not wrong, f"{path.relative_to(PACKAGE)} imports {wrong}, a layer above it"


def test_only_the_command_line_imports_the_server():
    """basegpt/serve sits on top of the library: nothing below it imports it (so the core
    never needs its web stack)."""
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] in ("serve", "cli"):
            continue
        wrong = sorted(n for n in _imports(path) if n.startswith("basegpt.serve"))
        assert not wrong, f"{path.relative_to(PACKAGE)} imports {wrong}"
