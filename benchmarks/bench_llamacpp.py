"""llama.cpp on basegpt's weights: a model exported to GGUF (basegpt.interop.gguf), run by
llama.cpp through llama-cpp-python, checked against basegpt and timed beside it, CPU.

For each model, on the same weights:

    checks   the prompt's ids (llama.cpp's tokenizer from the file vs basegpt's), the logits of
             every prompt position (llama.cpp's, logits_all=True, with its KV cache in f32,
             vs basegpt's forward; must agree to --atol; also shown with llama.cpp's default
             f16 KV cache), and the greedy continuation (--check-tokens tokens: llama.cpp's
             generate at temp 0 vs basegpt's generate_ids at temperature 0; must be identical)
    timing   decode tokens/s at batch 1: --new-tokens tokens after the prompt, greedy, the whole
             call timed (prefill of the short prompt included), best of --repeats rounds after a
             warm-up, the two taking turns (bench_generate.best_times); at each --threads
             count (torch.set_num_threads for basegpt; n_threads = n_threads_batch for llama.cpp)

Models: bench_generate.py's "larger" size, 6 blocks x 256 wide, 8 heads of 32, n_ff 1024,
vocab 4096, n_context 1024, tied head, with random weights of std --init-std (wider than
training's 0.02, so that greedy choices are not near-ties that round-off could flip), in two
shapes: GPT-2's (bench_generate.basegpt_model: pre-norm LayerNorm, learned positions, GELU ->
llama.cpp's gpt2 architecture) and Llama's (pre-norm RMSNorm, RoPE, SwiGLU, no biases ->
llama.cpp's llama architecture). Or --run RUN_DIR for a trained run. The tokenizer is a
4096-token basegpt BPE trained on the built-in corpus (gpt4 pattern, exported as "dbrx").

With --llama-cpp-dir (a llama.cpp source tree, e.g. vendor/llama.cpp of the llama-cpp-python
sdist) it also runs llama.cpp's own convert_hf_to_gguf.py on the GPT-2 model's
`--format hf` export and reports whether it converts (and, if it does, the logits of its file).

    pip install llama-cpp-python gguf                 # llama-cpp-python builds llama.cpp
    python benchmarks/bench_llamacpp.py
    python benchmarks/bench_llamacpp.py --threads 1 --repeats 5
    python benchmarks/bench_llamacpp.py --run runs/mine
    python benchmarks/bench_llamacpp.py --llama-cpp-dir llama_cpp_python-0.3.36/vendor/llama.cpp

Exit code 1 when a check fails (after the tables).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench_generate import N_CONTEXT, SIZES, VOCAB, basegpt_model, best_times  # noqa: E402
from basegpt import Tokenizer  # noqa: E402
from basegpt.checkpoint import load_run  # noqa: E402
from basegpt.config import ModelConfig  # noqa: E402
from basegpt.corpus import builtin_corpus  # noqa: E402
from basegpt.generate import generate_ids  # noqa: E402
from basegpt.interop.gguf import export_gguf, gguf_architecture  # noqa: E402
from basegpt.interop.hf import export_hf  # noqa: E402
from basegpt import B2lM  # noqa: E402  (laid out as basegpt builds models: basegpt.fast)

PROMPT = "def greet(name):\n    \"\"\"Say hello to someone by name.\"\"\"\n    return f'Hello, {name}!'\n"
SIZE = SIZES["larger 6x256"]


def tokenizer() -> Tokenizer:
    return Tokenizer(vocab_size=VOCAB).train(list(builtin_corpus(2_000_000)), progress=False)


def random_weights(model: B2lM, std: float, seed: int) -> B2lM:
    """Every matrix redrawn with std `std` (norms stay 1, biases 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


def models(args: argparse.Namespace) -> list[tuple[str, B2lM, Tokenizer]]:
    if args.run:
        run = load_run(args.run)
        return [(Path(args.run).name, run.model, run.tokenizer)]
    tok = tokenizer()
    gpt2 = basegpt_model(SIZE, "cpu")                                  # bench_generate's model
    llama = B2lM(ModelConfig(vocab_size=VOCAB, n_context=N_CONTEXT, n_k=32, n_v=32,
                             norm_position="pre", norm="rmsnorm", positional="rope",
                             activation="swiglu", bias=False, tie_weights=True, **SIZE))
    return [("gpt2-shaped 6x256", random_weights(gpt2, args.init_std, 0), tok),
            ("llama-shaped 6x256", random_weights(llama, args.init_std, 1), tok)]


def llama_logits(llm, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[:len(ids)])


def llama_greedy(llm, ids: list[int], n: int) -> list[int]:
    llm.reset()                               # no prompt reuse from the previous call
    out = []
    for token in llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0,
                              repeat_penalty=1.0):
        out.append(token)
        if len(out) == n:
            return out
    return out


def check(name: str, model: B2lM, tok: Tokenizer, path: Path, args) -> dict:
    """Ids, logits and greedy tokens of llama.cpp against basegpt's. The logits are compared
    with llama.cpp's KV cache in f32 (the check: both sides compute in f32) and in its default
    f16 (for information: what llama.cpp users get)."""
    import llama_cpp
    ids = tok.encode(PROMPT)

    def llama(**settings):
        return llama_cpp.Llama(str(path), n_ctx=model.config.n_context, logits_all=True,
                               verbose=False, n_threads=max(args.threads),
                               n_threads_batch=max(args.threads), **settings)

    f32_cache = llama(type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    default = llama()
    their_ids = default.tokenize(PROMPT.encode("utf-8"), add_bos=False, special=False)
    with torch.no_grad():
        ours = model(torch.tensor([ids]))[0].numpy()
    diff = float(np.abs(llama_logits(f32_cache, ids) - ours).max())
    diff_default = float(np.abs(llama_logits(default, ids) - ours).max())
    n = args.check_tokens
    greedy_ours = generate_ids(model, [ids], max_new_tokens=n, temperature=0)[0].ids
    greedy_theirs = llama_greedy(default, ids, n)
    first_diff = next((i for i, (a, b) in enumerate(zip(greedy_ours, greedy_theirs)) if a != b),
                      None)
    return {"model": name, "arch": gguf_architecture(model.config), "ids": their_ids == ids,
            "n_ids": len(ids), "diff": diff, "diff_default": diff_default,
            "logits_ok": diff <= args.atol, "greedy": greedy_ours == greedy_theirs,
            "first_diff": first_diff}


def timing(model: B2lM, tok: Tokenizer, path: Path, threads: int, args) -> tuple[float, float]:
    from llama_cpp import Llama
    ids, n = tok.encode(PROMPT), args.new_tokens
    if len(ids) + n > model.config.n_context:
        sys.exit(f"the prompt ({len(ids)} tokens) and --new-tokens {n} do not fit in "
                 f"n_context={model.config.n_context}; pass a smaller --new-tokens")
    torch.set_num_threads(threads)
    llm = Llama(str(path), n_ctx=model.config.n_context, n_threads=threads,
                n_threads_batch=threads, verbose=False)

    def ours() -> None:
        out = generate_ids(model, [ids], max_new_tokens=n, temperature=0)[0].ids
        assert len(out) == n, "basegpt stopped early"

    def theirs() -> None:
        assert len(llama_greedy(llm, ids, n)) == n, "llama.cpp stopped early"

    t_ours, t_theirs = best_times([ours, theirs], args.repeats, "cpu")
    return n / t_ours, n / t_theirs


def convert_hf(model: B2lM, tok: Tokenizer, llama_cpp_dir: Path, tmp: Path, args) -> str:
    """What llama.cpp's own converter makes of basegpt's Hugging Face export of `model`."""
    script = llama_cpp_dir / "convert_hf_to_gguf.py"
    if not script.is_file():
        return f"no {script}; pass --llama-cpp-dir pointing at a llama.cpp source tree"
    hf_dir, out = export_hf((model, tok), tmp / "hf"), tmp / "converted.gguf"
    done = subprocess.run([sys.executable, str(script), str(hf_dir), "--outfile", str(out),
                           "--outtype", "f32"], capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return f"does not convert: `{lines[-1] if lines else done.returncode}`"
    from llama_cpp import Llama
    ids = tok.encode(PROMPT)
    llm = Llama(str(out), n_ctx=model.config.n_context, logits_all=True, verbose=False)
    with torch.no_grad():
        ours = model(torch.tensor([ids]))[0].numpy()
    diff = float(np.abs(llama_logits(llm, ids) - ours).max())
    same_ids = llm.tokenize(PROMPT.encode("utf-8"), add_bos=False, special=False) == ids
    return (f"converts; its file gives max |logit difference| {diff:.1e}, prompt ids "
            f"{'equal' if same_ids else 'DIFFERENT'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a run directory to export instead of the random models")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    parser.add_argument("--new-tokens", type=int, default=512)
    parser.add_argument("--check-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--atol", type=float, default=1e-3)
    parser.add_argument("--init-std", type=float, default=0.1)
    parser.add_argument("--llama-cpp-dir", type=Path,
                        help="llama.cpp sources, to try its convert_hf_to_gguf.py as well")
    args = parser.parse_args()
    try:
        import llama_cpp
    except ImportError:
        sys.exit("this benchmark needs llama-cpp-python: pip install llama-cpp-python "
                 "(it builds llama.cpp from source)")

    checks, rows, conversion = [], [], None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for k, (name, model, tok) in enumerate(models(args)):
            path = export_gguf((model, tok), tmp / f"model{k}.gguf", dtype="f32")
            checks.append(check(name, model, tok, path, args))
            print(checks[-1], file=sys.stderr, flush=True)
            for threads in args.threads:
                ours, theirs = timing(model, tok, path, threads, args)
                rows.append((name, checks[-1]["arch"], threads, ours, theirs))
                print(rows[-1], file=sys.stderr, flush=True)
            if args.llama_cpp_dir and checks[-1]["arch"] == "gpt2" and conversion is None:
                conversion = convert_hf(model, tok, args.llama_cpp_dir, tmp, args)

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip() or "?"
    print(f"\nPython {platform.python_version()}, torch {torch.__version__}, llama-cpp-python "
          f"{llama_cpp.__version__}, {os.cpu_count()} CPUs, f32 GGUF, commit {commit}\n")
    print(f"| model | llama.cpp arch | prompt ids equal | max abs logit diff, f32 KV cache "
          f"({checks[0]['n_ids']} positions, tol {args.atol:g}) | the same, default f16 KV "
          f"cache | greedy {args.check_tokens} tokens equal |")
    print("|---|---|---|---:|---:|---|")
    for c in checks:
        greedy = "yes" if c["greedy"] else f"NO (first differs at {c['first_diff']})"
        print(f"| {c['model']} | {c['arch']} | {'yes' if c['ids'] else 'NO'} | {c['diff']:.1e}"
              f"{'' if c['logits_ok'] else ' (FAIL)'} | {c['diff_default']:.1e} | {greedy} |")
    if any(c["arch"] == "gpt2" and not c["logits_ok"] for c in checks):
        print("\nllama.cpp's CPU GELU (gpt2) looks its value up in a float16 table "
              "(GGML_GELU_FP16): each activation carries float16 rounding, which the blocks "
              "add up to a few 1e-3 in the logits; greedy tokens and ids are the check there.")
    print(f"\nDecoding {args.new_tokens} new tokens at batch 1, greedy, best of {args.repeats}:\n")
    print("| model | threads | basegpt generate (tok/s) | llama.cpp (tok/s) | "
          "llama.cpp / basegpt |")
    print("|---|---:|---:|---:|---:|")
    for name, arch, threads, ours, theirs in rows:
        print(f"| {name} ({arch}) | {threads} | {ours:,.0f} | {theirs:,.0f} | "
              f"{theirs / ours:.2f}x |")
    if args.llama_cpp_dir:
        print(f"\nllama.cpp's convert_hf_to_gguf.py on `basegpt export --format hf`: "
              f"{conversion or 'not tried (no GPT-2-shaped model)'}")
    failed = [c["model"] for c in checks if not (c["ids"] and c["logits_ok"] and c["greedy"])]
    if failed:
        print(f"\nchecks FAILED for: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
