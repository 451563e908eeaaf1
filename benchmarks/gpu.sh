#!/usr/bin/env bash
# basegpt on CUDA GPUs: training speed, time to a known loss, decoding, DDP vs FSDP.
# One command, under 10 minutes, nothing installed and nothing downloaded.
#
#   benchmarks/gpu.sh [OUT]            results in OUT (else $OUT, else ./gpu-results)
#   GPU_SH_DRY_RUN=1 benchmarks/gpu.sh /tmp/out   every step at toy sizes on the CPU
#
# Writes OUT/results.json (every step's status and figures), OUT/gpu.md (a Markdown table
# for BENCHMARKS.md, also printed at the end) and OUT/logs/STEP.log. Steps, each under its
# own time cap (a step that fails or runs out of time is reported so, and the next one runs):
#
#   env          GPUs, versions, whether triton, transformers and the C tokenizer are there
#   throughput   GPT-2 small (the gpt2-small preset's model) training through basegpt's loop
#                on random tokens, bf16 + compile + fused AdamW + SDPA: tokens/s and MFU
#                after warm-up; targets >= 1.25x nanoGPT's ~429k tok/s on one H100, MFU >= 50%
#   shakespeare  `basegpt train --preset shakespeare-char` for 1.5 minutes, validating every
#                100 steps: best validation bits/char and the time to nanoGPT's best there,
#                2.117 bits/char (1.467 nats, ~91 s on one H100); target <= 60 s
#   decode       benchmarks/bench_generate.py on GPT-2 small in bf16, batch 1 and 32, against
#                HF generate (left out, and said so, without transformers)
#   parallel-ddp, parallel-fsdp
#                torchrun on every GPU (one process with one GPU), `basegpt train --parallel
#                ddp|fsdp`, GPT-2 small's shape with a byte vocabulary: tokens/s and each
#                process's peak CUDA memory; "not available" where `basegpt train` has no
#                --parallel
#
# Environment:
#   BASEGPT_SHAKESPEARE  tinyshakespeare's input.txt (1,115,394 bytes). Default: the first of
#                        data/tinyshakespeare.txt in this checkout (data/ is git-ignored) and
#                        ../shared/data/tinyshakespeare.txt beside it. Where the checkout is
#                        copied to the GPU machine without its ignored files, copy the file
#                        into data/ and have the copy include it. Without it, that step is
#                        skipped and says so.
#   GPU_SH_NPROC         processes for the DDP/FSDP steps (default: the GPU count; dry run 1)
#   GPU_SH_STEPS         the steps to run, e.g. "env decode" (default all: env throughput
#                        shakespeare decode parallel); the others are reported as skipped
#   PYTHON               the interpreter (default python3)
#   BASEGPT_COMMIT       the commit to report where the checkout was copied without .git
#
# basegpt runs from this checkout (PYTHONPATH), installed or not; its tokenizer's C extension
# is optional (the pure-Python code gives the same results). Runs (their checkpoints are
# hundreds of MB) and the cache of tokenizers and prepared data (BASEGPT_CACHE) go to a
# temporary folder, $GPU_SH_WORK if set (then kept), else one made under $TMPDIR and removed
# at the end; each run's metrics.jsonl, config.json and run.json are copied to OUT/runs/.

set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT_DIR=${1:-${OUT:-./gpu-results}}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
PY=${PYTHON:-python3}
DRY=${GPU_SH_DRY_RUN:-0}
WANTED=" ${GPU_SH_STEPS:-env throughput shakespeare decode parallel} "
[ "$DRY" = "0" ] && DRY=""
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
BENCH="$ROOT/benchmarks"
if [ -n "${GPU_SH_WORK:-}" ]; then
    WORK=$GPU_SH_WORK
    mkdir -p "$WORK"
else
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/basegpt-gpu.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
fi
export BASEGPT_CACHE="$WORK/cache"

BUDGET=570            # seconds for all the steps together, the report after them
RESERVE=15            # kept for the report
MIN_STEP=20           # a step with less time left than this is skipped

# basegpt's own runtime needs; without one of them every step would fail the same way.
missing=$("$PY" -c 'import importlib.util
print(" ".join(m for m in ("torch", "numpy", "tqdm", "safetensors")
               if importlib.util.find_spec(m) is None))') || missing="(could not run $PY)"
if [ -n "$missing" ]; then
    echo "gpu.sh: error: basegpt needs the Python packages torch, numpy, tqdm and safetensors;" \
         "$PY lacks: $missing. Install them, or name an interpreter that has them with" \
         "PYTHON=..." >&2
    exit 2
fi

if [ -z "${BASEGPT_SHAKESPEARE:-}" ]; then
    for candidate in "$ROOT/data/tinyshakespeare.txt" "$ROOT/../shared/data/tinyshakespeare.txt"; do
        if [ -f "$candidate" ]; then BASEGPT_SHAKESPEARE=$candidate; break; fi
    done
fi
SHAKESPEARE=${BASEGPT_SHAKESPEARE:-}

if [ -n "$DRY" ]; then
    GPUS=0
    NPROC=${GPU_SH_NPROC:-1}
    WARMUP=1
    # Each step's cap in seconds, and the sizes that make it a plumbing check.
    CAP_ENV=60 CAP_THROUGHPUT=60 CAP_SHAKESPEARE=90 CAP_DECODE=60 CAP_PARALLEL=90
    THROUGHPUT=(--dry-run --warmup 2 --steps 3 --batch-size 4 --max-seconds 45)
    TINY=(--n-block 2 --n-embed 32 --n-head 2 --n-k 16 --n-v 16 --n-ff 64 --n-context 16
          --batch-size 4 --eval-tokens 256 --device cpu --dtype float32 --compile off)
    SHAKESPEARE_RUN=("${TINY[@]}" --max-steps 4 --eval-every 2 --max-minutes 1)
    DECODE=(--device cpu --sizes seed --batch 1 4 --new-tokens 8 --repeats 1)
    PARALLEL_RUN=("${TINY[@]}" --max-bytes 200000 --batch-tokens $((4 * 16 * NPROC))
                  --max-steps 3)
else
    if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
        echo "gpu.sh: error: no CUDA GPU is visible to $PY (torch.cuda.is_available() is False);" \
             "run it on a GPU machine, or GPU_SH_DRY_RUN=1 $0 $OUT_DIR to check the script on" \
             "the CPU" >&2
        exit 2
    fi
    GPUS=$("$PY" -c 'import torch; print(torch.cuda.device_count())')
    NPROC=${GPU_SH_NPROC:-$GPUS}
    WARMUP=10
    CAP_ENV=40 CAP_THROUGHPUT=120 CAP_SHAKESPEARE=135 CAP_DECODE=80 CAP_PARALLEL=70
    THROUGHPUT=(--warmup 20 --steps 50 --batch-size 16 --max-seconds 105)
    SHAKESPEARE_RUN=(--max-minutes 1.5 --eval-every 100)
    DECODE=(--device cuda --sizes gpt2 --batch 1 32 --new-tokens 128 --repeats 2
            --dtype bfloat16)
    # 8 sequences of 1024 per process and step, no accumulation; compile off in both, so
    # the two differ only in how they hold and synchronise the model.
    PARALLEL_RUN=(--max-bytes 2000000 --batch-size 8 --batch-tokens $((8 * 1024 * NPROC))
                  --max-steps 40 --eval-tokens 65536 --dtype bfloat16 --compile off)
fi

mkdir -p "$OUT_DIR/logs" "$OUT_DIR/steps" "$OUT_DIR/parallel"
rm -rf "$OUT_DIR"/steps/*.json "$OUT_DIR"/parallel/*.json "$OUT_DIR"/{env,throughput,decode}.json \
    "$OUT_DIR/runs"

# record STEP STATUS SECONDS CAP NOTE: the step's status file, which the report reads.
record() {
    "$PY" -c 'import json, sys
step, status, seconds, cap, note, path = sys.argv[1:]
json.dump({"status": status, "seconds": int(seconds), "cap_s": int(cap), "note": note},
          open(path, "w"))' "$1" "$2" "$3" "$4" "$5" "$OUT_DIR/steps/$1.json"
    printf '%-14s %-14s %4ss  %s\n' "$1" "$2" "$3" "$5"
}

# why NAME: the line of logs/NAME.log that best says why the step failed: basegpt's own
# error line, else the last line naming an error (a traceback's last line; under torchrun the
# children's, not torchrun's own ChildFailedError after them), else the last line.
why() {
    local log="$OUT_DIR/logs/$1.log" line
    line=$(grep -m 1 '^basegpt: error:' "$log")
    [ -n "$line" ] || line=$(grep -E '^[A-Za-z_.]*(Error|Exception)\b' "$log" |
                             grep -v ChildFailedError | tail -n 1)
    [ -n "$line" ] || line=$(grep -v '^\s*$' "$log" | tail -n 1)
    printf '%s' "${line:0:200}"
}

# keep_run NAME: the small files of run WORK/runs/NAME (what the report reads, and what
# says how it ran) into OUT/runs/NAME; its checkpoints stay behind.
keep_run() {
    local file
    mkdir -p "$OUT_DIR/runs/$1"
    for file in metrics.jsonl config.json run.json; do
        [ -f "$WORK/runs/$1/$file" ] && cp "$WORK/runs/$1/$file" "$OUT_DIR/runs/$1/"
    done
    return 0
}

# wanted NAME: NAME (parallel-ddp counts as parallel) is in GPU_SH_STEPS; else it is
# recorded as skipped.
wanted() {
    [[ "$WANTED" == *" ${1%%-*} "* ]] && return 0
    record "$1" skipped 0 0 "not in GPU_SH_STEPS"
    return 1
}

# step NAME CAP COMMAND...: run COMMAND under a time cap (shortened to what the budget has
# left) with its output in logs/NAME.log, and record how it ended.
step() {
    local name=$1 cap=$2
    shift 2
    wanted "$name" || return 0
    local left=$((BUDGET - SECONDS - RESERVE))
    if ((left < MIN_STEP)); then
        record "$name" skipped 0 0 "out of time: ${left} s left of the ${BUDGET} s budget"
        return
    fi
    ((cap > left)) && cap=$left
    local start=$SECONDS rc=0
    timeout --kill-after=10 "$cap" "$@" >"$OUT_DIR/logs/$name.log" 2>&1 || rc=$?
    local took=$((SECONDS - start))
    if ((rc == 0)); then
        record "$name" ok "$took" "$cap" ""
    elif ((rc == 124 || rc == 137)); then
        record "$name" "timed out" "$took" "$cap" "stopped at its ${cap} s cap; logs/$name.log"
    else
        record "$name" failed "$took" "$cap" "exit $rc; logs/$name.log: $(why "$name")"
    fi
}

"$PY" -c 'import json, sys
keys = ("dry_run", "shakespeare", "nproc", "gpus", "parallel_warmup", "budget_s")
values = sys.argv[1:-1]
plan = dict(zip(keys, values))
plan["dry_run"] = plan["dry_run"] == "1"
plan["shakespeare"] = plan["shakespeare"] or None
for key in keys[2:]:
    plan[key] = int(plan[key])
json.dump(plan, open(sys.argv[-1], "w"))' "$([ -n "$DRY" ] && echo 1 || echo 0)" "$SHAKESPEARE" \
    "$NPROC" "$GPUS" "$WARMUP" "$BUDGET" "$OUT_DIR/plan.json"

echo "gpu.sh: results in $OUT_DIR${DRY:+ (DRY RUN: toy sizes on the CPU)}"
step env "$CAP_ENV" "$PY" "$BENCH/bench_gpu.py" env "$OUT_DIR"
step throughput "$CAP_THROUGHPUT" "$PY" "$BENCH/bench_gpu.py" throughput "$OUT_DIR" \
    "${THROUGHPUT[@]}"

if [ -z "$SHAKESPEARE" ] || [ ! -f "$SHAKESPEARE" ]; then
    wanted shakespeare && record shakespeare skipped 0 0 "no tinyshakespeare file${SHAKESPEARE:+ \
at $SHAKESPEARE}: copy input.txt into data/ of the checkout and set \
BASEGPT_SHAKESPEARE=data/tinyshakespeare.txt"
else
    step shakespeare "$CAP_SHAKESPEARE" "$PY" -m basegpt train --preset shakespeare-char \
        "$SHAKESPEARE" --out "$WORK/runs/shakespeare-char" --overwrite \
        "${SHAKESPEARE_RUN[@]}"
    keep_run shakespeare-char
fi

step decode "$CAP_DECODE" "$PY" "$BENCH/bench_generate.py" "${DECODE[@]}" \
    --json "$OUT_DIR/decode.json"

if [[ "$WANTED" != *" parallel "* ]]; then
    wanted parallel-ddp
    wanted parallel-fsdp
elif "$PY" -m basegpt train --help 2>/dev/null | grep -q -- '--parallel'; then
    for mode in ddp fsdp; do
        step "parallel-$mode" "$CAP_PARALLEL" "$PY" -m torch.distributed.run --standalone \
            --nproc_per_node="$NPROC" "$BENCH/bench_gpu.py" peak-memory \
            "$OUT_DIR/parallel/$mode" -- train --preset gpt2-small --vocab-size 258 \
            --out "$WORK/runs/parallel-$mode" --overwrite --parallel "$mode" \
            "${PARALLEL_RUN[@]}"
        keep_run "parallel-$mode"
    done
else
    for mode in ddp fsdp; do
        wanted "parallel-$mode" && record "parallel-$mode" "not available" 0 0 \
            "this checkout's basegpt train has no --parallel flag"
    done
fi

echo
"$PY" "$BENCH/bench_gpu.py" report "$OUT_DIR" || {
    echo "gpu.sh: error: the report failed; the steps' files are in $OUT_DIR" >&2
    exit 1
}
echo "gpu.sh: ${SECONDS} s; $OUT_DIR/results.json, $OUT_DIR/gpu.md"
