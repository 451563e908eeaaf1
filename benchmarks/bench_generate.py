"""Generation benchmark: decode tokens/s with and without the KV cache, against Hugging Face.

For each model size, batch size B (default 1) and number of new tokens N (greedy, a 16-token
prompt per row):

    basegpt, KV cache      generate_ids(model, prompt, max_new_tokens=N, temperature=0)
                           (one-token steps on basegpt/fast/decode.py's DecodeStep)
    basegpt, modules       the same with fast_step=False (every step through model.forward)
    basegpt, no cache      the same with use_cache=False (every step reruns the whole context)
    HF transformers        GPT2LMHeadModel(GPT2Config of the same size, random init).generate(
                               do_sample=False, max_new_tokens=N, min_new_tokens=N)

tokens/s = B * N / wall time of the whole call (every row's new tokens; prefill included, the
prompt is short). "Matrix work alone" times just the step's matrix products (every weight matrix
times B vectors, N times) in torch's F.linear, and again in numpy's matmul: the ceilings of a
decoder of
that size that multiplies with torch's BLAS (as HF's GPT-2 and basegpt's modules do) or with
numpy's (as DecodeStep does on a CPU in float32 with one torch thread, OpenBLAS held to one
thread; with more torch threads it multiplies with torch). Each
figure is the best of --repeats runs after one warm-up run, basegpt and HF taking turns (the
no-cache path at N >= 256 runs once: it is slow, and its spread is small). Both models are
float32 (or --dtype), eval mode, random weights, on the same device in the same process, with
the same torch thread count (--threads; default 1: at batch 1 the matrices are small, and on
a shared machine one thread gives stable figures). Sizes:

    seed:   4 blocks x 128 wide, 4 heads (n_k = n_v = 32), n_ff 256,  vocab 4096, n_context 1024
    larger: 6 blocks x 256 wide, 8 heads (n_k = n_v = 32), n_ff 1024, vocab 4096, n_context 1024
    gpt2:   GPT-2 small, 12 blocks x 768 wide, 12 heads (n_k = n_v = 64), n_ff 3072,
            vocab 50257, n_context 1024 (not in the default --sizes: for GPUs)

Without `transformers` (or with --no-hf) the HF column is left out and the run says so.

GPT-2 blocks are pre-norm with GELU and learned positions; the basegpt models use the same
(pre-norm, GELU, learned positions, weight tying like GPT-2) so both do the same arithmetic.

    python benchmarks/bench_generate.py                  # the full table, CPU (7-10 minutes)
    python benchmarks/bench_generate.py --quick          # N = 64 only
    python benchmarks/bench_generate.py --sizes larger --repeats 6   # one size, more rounds
    python benchmarks/bench_generate.py --device cuda
    python benchmarks/bench_generate.py --layouts        # why B2lM stores weights (in, out)
    python benchmarks/bench_generate.py --dtype bfloat16 # both models' weights in bf16
    python benchmarks/bench_generate.py --device cuda --sizes gpt2 --batch 1 32 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from basegpt.config import ModelConfig  # noqa: E402
from basegpt.generate import generate_ids  # noqa: E402
from basegpt import B2lM  # noqa: E402  (laid out as users get it: basegpt.fast)
from basegpt.fast.decode import numpy_blas_threads, numpy_products  # noqa: E402

VOCAB, N_CONTEXT, PROMPT_LEN = 4096, 1024, 16
SIZES = {
    "seed 4x128": dict(n_block=4, n_embed=128, n_head=4, n_ff=256),
    "larger 6x256": dict(n_block=6, n_embed=256, n_head=8, n_ff=1024),
    "gpt2 12x768": dict(n_block=12, n_embed=768, n_head=12, n_ff=3072, n_k=64, n_v=64,
                        vocab_size=50257),
}
DEFAULT_SIZES = ["seed", "larger"]


def basegpt_model(size: dict, device: str, dtype: torch.dtype = torch.float32) -> B2lM:
    size = {"vocab_size": VOCAB, "n_k": 32, "n_v": 32, **size}
    cfg = ModelConfig(n_context=N_CONTEXT, norm_position="pre", activation="gelu",
                      positional="learned", tie_weights=True, **size)
    return B2lM(cfg).to(device, dtype).eval()


def hf_model(size: dict, device: str, dtype: torch.dtype = torch.float32):
    from transformers import GPT2Config, GPT2LMHeadModel
    # GPT-2's head width is n_embd / n_head, which every size here keeps equal to its n_k.
    cfg = GPT2Config(vocab_size=size.get("vocab_size", VOCAB), n_positions=N_CONTEXT, n_embd=size["n_embed"],
                     n_layer=size["n_block"], n_head=size["n_head"], n_inner=size["n_ff"],
                     bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return GPT2LMHeadModel(cfg).to(device, dtype).eval()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def best_times(fns, repeats: int, device: str) -> list[float]:
    """Best wall time of each function over `repeats` rounds, after one warm-up round. The
    functions take turns within each round, so a burst of load from elsewhere on the machine
    hits all of them alike instead of one contender's whole measurement."""
    for fn in fns:
        fn()                                                # warm-up: allocator, kernels
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def matrix_work(model: B2lM, device: str, in_numpy: bool = False, batch: int = 1):
    """A function doing only the matrix products of one decoding step, n times: every weight
    matrix of the model (and the head) applied to `batch` tokens' vectors, as a step at that
    batch must, with no attention, norms, Python model code or sampling. Its tokens/s is the
    ceiling of a decoder of this size at this batch on this machine in the model's dtype,
    multiplying in torch's F.linear, or with in_numpy in numpy's matmul on one OpenBLAS thread
    (as DecodeStep)."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not any(m.weight is model.tok_emb.weight for m in linears):
        linears.append(model.lm_head)
    dtype = model.tok_emb.weight.dtype
    inputs = {m.in_features: torch.randn(batch, m.in_features, device=device, dtype=dtype)
              for m in linears}
    if in_numpy:
        pairs = [(inputs[m.in_features].numpy(), m.weight.detach().t().numpy()) for m in linears]
        set_threads = numpy_blas_threads()

        def in_numpy_fn(n: int) -> None:
            before = set_threads(1)
            for _ in range(n):
                for x, w in pairs:
                    np.matmul(x, w)
            set_threads(before)
        return in_numpy_fn

    def fn(n: int) -> None:
        with torch.inference_mode():
            for _ in range(n):
                for m in linears:
                    torch.nn.functional.linear(inputs[m.in_features], m.weight, m.bias)
    return fn


def layouts(repeats: int) -> None:
    """Batch-1 matrix-vector products over GPT-2 small's 48 block matrices (~340 MB, so every
    pass streams them from memory), with the weights stored (out, in) as F.linear's default and
    (in, out) as B2lM keeps them (model/b2lm.py: store_transposed). Prints ms per pass."""
    shapes = [(3 * 768, 768), (768, 768), (3072, 768), (768, 3072)] * 12      # (out, in)
    rows = [torch.randn(o, i) for o, i in shapes]
    cols = [w.t().contiguous().t() for w in rows]                          # same values
    x = {768: torch.randn(1, 768), 3072: torch.randn(1, 3072)}
    for name, weights in (("(out, in)", rows), ("(in, out)", cols)):
        def one_pass() -> None:
            for w in weights:
                torch.nn.functional.linear(x[w.shape[1]], w)
        (best,) = best_times([one_pass], repeats, "cpu")
        print(f"weights stored {name}: {best * 1e3:.1f} ms a pass over 48 GPT-2-small matrices")


def run(args: argparse.Namespace) -> list[tuple]:
    """One row per (size, batch, new tokens): (name, batch, n, tokens/s of the KV cache, of the
    modules, of no cache, of HF (None without it), matrix work in torch, in numpy (or None))."""
    torch.manual_seed(0)
    rows = []
    dtype = getattr(torch, args.dtype)
    for name, size in SIZES.items():
        if name.split()[0] not in args.sizes:
            continue
        ours = basegpt_model(size, args.device, dtype)
        theirs = hf_model(size, args.device, dtype) if args.hf else None
        for batch, n in [(b, n) for b in args.batch for n in args.new_tokens]:
            prompt = torch.randint(1, size.get("vocab_size", VOCAB), (batch, PROMPT_LEN),
                                   device=args.device)
            rows.append(_one_row(args, name, ours, theirs, prompt, n))
    return rows


def _one_row(args: argparse.Namespace, name: str, ours: B2lM, theirs, prompt: torch.Tensor,
             n: int) -> tuple:
    """Time each contender generating n tokens after every row of `prompt`; see run()."""
    batch = prompt.shape[0]

    def cached():
        out = generate_ids(ours, prompt, max_new_tokens=n, temperature=0)
        assert all(len(g.ids) == n for g in out), "no early stop: no eot given"

    def modules():
        generate_ids(ours, prompt, max_new_tokens=n, temperature=0, fast_step=False)

    def uncached():
        generate_ids(ours, prompt, max_new_tokens=n, temperature=0, use_cache=False)

    def hf():
        with torch.inference_mode():
            out = theirs.generate(prompt, attention_mask=torch.ones_like(prompt),
                                  do_sample=False, max_new_tokens=n, min_new_tokens=n)
        assert out.shape[1] == PROMPT_LEN + n, "HF generated fewer tokens"

    floors = [matrix_work(ours, args.device, batch=batch)]
    if numpy_products(ours):
        floors.append(matrix_work(ours, args.device, in_numpy=True, batch=batch))
    peers = [hf] if theirs is not None else []
    t_cache, t_mod, *t_rest = best_times(
        [cached, modules, *peers, *(lambda f=f: f(n) for f in floors)], args.repeats,
        args.device)
    t_hf, t_mat = (t_rest[0], t_rest[1:]) if peers else (None, t_rest)
    (t_none,) = best_times([uncached], args.repeats if n < 256 else 1, args.device)
    tokens = batch * n
    mat = tokens / t_mat[0]
    mat_np = tokens / t_mat[1] if len(t_mat) > 1 else None
    hf_rate = tokens / t_hf if t_hf is not None else None
    row = (name, batch, n, tokens / t_cache, tokens / t_mod, tokens / t_none, hf_rate,
           mat, mat_np)
    print(f"{name:14s} B={batch:3d} N={n:4d}  cache {row[3]:8.0f} tok/s  modules "
          f"{row[4]:7.0f}  no cache {row[5]:7.0f}  HF {hf_rate or 0:7.0f}  matrix work "
          f"alone {mat:7.0f} (torch) {mat_np or 0:7.0f} (numpy)", file=sys.stderr, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, nargs="+", default=[64, 256, 512])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--quick", action="store_true", help="N = 64 only")
    parser.add_argument("--sizes", nargs="+", choices=[n.split()[0] for n in SIZES],
                        default=DEFAULT_SIZES, help="model sizes (default seed and larger)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1],
                        help="prompts decoded together (default 1); tokens/s counts every row's")
    parser.add_argument("--no-hf", dest="hf", action="store_false",
                        help="leave HF generate out (also without transformers installed)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="also write the rows and the versions to this JSON file")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="weights and cache of both models (default float32)")
    parser.add_argument("--layouts", action="store_true",
                        help="only time batch-1 products with weights stored (out, in) vs (in, out)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.layouts:
        layouts(max(args.repeats, 5))
        return
    if args.quick:
        args.new_tokens = [64]
    hf_version = None
    if args.hf:
        try:
            import transformers
            hf_version = transformers.__version__
        except ImportError:
            args.hf = False
            print("HF generate: skipped, transformers is not installed (pip install "
                  "transformers to compare)", file=sys.stderr, flush=True)
    rows = run(args)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip() or "?"
    except OSError:
        commit = "?"
    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "numpy": np.__version__, "transformers": hf_version,
                "threads": torch.get_num_threads(), "device": args.device, "dtype": args.dtype,
                "commit": commit}
    print(f"\nPython {versions['python']}, torch {torch.__version__}, numpy {np.__version__}, "
          f"transformers {hf_version or 'not installed'}, {torch.get_num_threads()} threads, "
          f"device {args.device}, {args.dtype}, commit {commit}\n")
    print("| model | batch | new tokens | basegpt KV cache (tok/s) | modules only (tok/s) | "
          "basegpt no cache (tok/s) | cache speed-up | HF generate (tok/s) | basegpt / HF | "
          "matrix work alone, torch / numpy (tok/s) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, batch, n, cache, mod, none, hf, mat, mat_np in rows:
        in_numpy = "—" if mat_np is None else f"{mat_np:,.0f}"
        peer = ("—", "—") if hf is None else (f"{hf:,.0f}", f"{cache / hf:.2f}x")
        print(f"| {name} | {batch} | {n} | {cache:,.0f} | {mod:,.0f} | {none:,.0f} | "
              f"{cache / none:.1f}x | {peer[0]} | {peer[1]} | {mat:,.0f} / {in_numpy} |")
    if args.json is not None:
        keys = ("model", "batch", "new_tokens", "kv_cache", "modules", "no_cache", "hf",
                "matrix_torch", "matrix_numpy")
        args.json.write_text(json.dumps({"versions": versions,
                                         "rows": [dict(zip(keys, row)) for row in rows]},
                                        indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
