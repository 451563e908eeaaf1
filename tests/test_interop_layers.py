"""basegpt.interop's imports point one way: entry points -> per-format mappings -> shared file
helpers -> tokenizers. Read from the source (every import, function-level ones included), so a
cycle hidden inside a function is caught too."""

import ast
from pathlib import Path

import basegpt.interop

INTEROP = Path(basegpt.interop.__file__).parent

LAYERS = {
    "hf": 3, "gguf": 3,              # entry points: what the CLI calls
    "hf_gpt2": 2, "hf_llama": 2,     # one format's mapping each; neither knows the other
    "hf_files": 1,                   # a Hugging Face directory's files, export source/target
    "tokenizers": 0,                 # tokenizer formats
    "renumbered": -1,                # the Tokenizer with another numbering
}
"""Module -> layer: a module may import only modules of a lower layer."""


def interop_imports(path: Path) -> set[str]:
    """The basegpt.interop modules that the file at `path` imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "basegpt.interop":
            found |= {alias.name for alias in node.names}            # from basegpt.interop import x
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("basegpt.interop."):
            found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found |= {alias.name.split(".")[2] for alias in node.names
                      if alias.name.startswith("basegpt.interop.")}
    return found


def test_every_interop_module_has_a_layer():
    modules = {path.stem for path in INTEROP.glob("*.py")} - {"__init__"}
    assert modules == set(LAYERS), f"place new modules in LAYERS: {sorted(modules ^ set(LAYERS))}"


def test_interop_imports_point_down_only():
    upward = [f"{path.stem} imports {imported}"
              for path in sorted(INTEROP.glob("*.py")) if path.stem in LAYERS
              for imported in sorted(interop_imports(path))
              if LAYERS.get(imported, LAYERS[path.stem]) >= LAYERS[path.stem]]
    assert upward == [], f"imports sideways or up a layer: {upward}"


def test_the_checker_sees_a_function_level_import(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from basegpt.interop import hf_llama\n"
                      "    import basegpt.interop.hf_files\n"
                      "    from basegpt.interop.hf_gpt2 import gpt2_config\n")
    assert interop_imports(source) == {"hf_llama", "hf_files", "hf_gpt2"}
