#!/usr/bin/env bash
# The GPU check of tunekit (benchmarks/bench_gpu.py), for a lent NVIDIA H100 / H200 machine. That
# machine reaches no package registry and is sent at most 64 MiB, so this script installs nothing
# from anywhere: it uses the Python there (torch, transformers, peft, accelerate, safetensors,
# pandas are installed) plus the wheels carried in .whl/ (torchao), and reads the models' files
# and the reviews from .gpu-assets/. Both folders are ignored by git and written here, on the
# development machine, by
#
#   .venv/bin/python benchmarks/gpu_prepare.py     # MiniLM config + tokenizer + float16 weights,
#                                                  # SmolLM2 config + tokenizer, the reviews,
#                                                  # the torchao wheel; prints the total (< 60 MiB)
#
# Then a session with a lent machine makes one call of the device tool's `run`:
#
#   run(command="bash benchmarks/gpu.sh", carry=[".gpu-assets", ".whl"], timeout_s=420)
#
# (benchmarks/RESULTS.md, "The GPU check", says it in full). Results go to $OUT (set there; here
# the default is ./gpu-out), four files that all come back: gpu.json (every number), gpu.md (the
# tables), gpu.log (each phase's output), setup.log. The exit code is 0 only when every phase ran
# and every check passed.
#
#   bash benchmarks/gpu.sh                             # on the GPU machine, about 5 minutes at most
#   SMOKE=1 OUT=/tmp/gpu-out bash benchmarks/gpu.sh    # tiny settings, on a CPU (tests/test_gpu_check.py)
#
# Phases, each in its own process under its own time limit (one hang loses only itself):
#   setup           versions, the GPU, the prepared folder checked against its manifest (SHA-256)
#   minilm-eager    MiniLM full fine-tuning, bf16 autocast, batch 256, max length 128 (random weights
#                   from MiniLM's config.json; real reviews, real tokenizer)
#   smollm2-lora    SmolLM2-135M, LoRA r=8, causal LM, bf16 autocast, batch 128 (random weights from
#                   SmolLM2's config.json)
#   correctness     the real MiniLM (float16 file) trained 300 steps with every strategy; accuracy
#                   above chance; each record, reloaded on the GPU and on the CPU (a process that
#                   sees no GPU), evaluates to the numbers it recorded
#   minilm-compile  as minilm-eager with compile=True (last: it may take longest)
# SMOKE=1: batch 4, length 32, a few steps; 2 layers of each random model; compile=True through
# dynamo's "eager" backend (no code generation); the above-chance check is reported, not required.
# Settings: PHASES (names, space-separated; default all of them), PYTHON (else the first of
# python3 and .venv/bin/python whose torch sees CUDA; with SMOKE=1 the first with torch),
# GPU_ASSETS (.gpu-assets), GPU_WHEELS (.whl), BUDGET_S (seconds for every phase together).
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
OUT=${OUT:-./gpu-out}
SMOKE=${SMOKE:-0}
ASSETS=${GPU_ASSETS:-.gpu-assets}
WHEELS=${GPU_WHEELS:-.whl}
PHASES=${PHASES:-minilm-eager smollm2-lora correctness minilm-compile}
SLOW=1; [ "$SMOKE" = 1 ] && SLOW=3   # a CPU is slower: the smoke run gets 3x the time limits
BUDGET=${BUDGET_S:-$((300 * SLOW))}  # seconds for every phase; setup and the report take a few more
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PHASES_DIR=$(mktemp -d)
SITE=$(mktemp -d)
trap 'rm -rf "$PHASES_DIR" "$SITE"' EXIT
LOG="$OUT/gpu.log"
SETUP_LOG="$OUT/setup.log"
: >"$LOG"; : >"$SETUP_LOG"
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INDEX=1 TOKENIZERS_PARALLELISM=false
export TUNEKIT_CACHE=${TUNEKIT_CACHE:-$SITE/cache}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # tunekit from this checkout, not installed

left() { echo $((BUDGET - ($(date +%s) - START))); }
say() { echo "[gpu.sh $(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }
fail() { say "FAILED: $*"; exit 1; }

# ----- python with a CUDA torch ------------------------------------------------------------------
has_cuda() { "$1" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; }
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for c in python3 .venv/bin/python; do
    command -v "$c" >/dev/null 2>&1 || continue
    if [ "$SMOKE" = 1 ] && "$c" -c "import torch" >/dev/null 2>&1; then PY=$c; break; fi
    if has_cuda "$c"; then PY=$c; break; fi
  done
fi
[ -n "$PY" ] || fail "no python whose torch sees CUDA (set PYTHON=..., or SMOKE=1 to run on a CPU)"
say "python: $PY ($("$PY" -c 'import torch; print(torch.__version__, "cuda" if torch.cuda.is_available() else "no cuda")' 2>&1))"

# ----- what was carried ------------------------------------------------------------------------------
[ -f "$ASSETS/manifest.json" ] || fail "$ASSETS/manifest.json is missing: run benchmarks/gpu_prepare.py on the \
development machine and carry its folders ($ASSETS, $WHEELS)"
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  # the carried wheels go first on the path, ahead of anything installed (carried: another version or missing)
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE/site" \
      "$WHEELS"/*.whl >>"$SETUP_LOG" 2>&1; then
    export PYTHONPATH="$PWD:$SITE/site${PYTHONPATH#"$PWD"}"
    say "installed from $WHEELS: $(cd "$WHEELS" && ls -- *.whl | tr '\n' ' ')"
  else
    say "installing the wheels in $WHEELS failed (see setup.log); going on with what is installed"
  fi
else
  say "no wheels in $WHEELS; going on with what is installed"
fi
"$PY" benchmarks/bench_gpu.py --setup --assets "$ASSETS" --out "$PHASES_DIR/setup.json" >>"$LOG" 2>&1 \
  || { "$PY" benchmarks/bench_gpu.py --report "$PHASES_DIR" --out-dir "$OUT" | tee -a "$LOG"; \
       fail "setup (see gpu.log)"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >>"$LOG" 2>&1 || true
say "setup done"

# ----- the phases ----------------------------------------------------------------------------------
cap_of() {
  case $1 in
    minilm-eager) echo 60 ;; smollm2-lora) echo 75 ;; correctness) echo 150 ;; minilm-compile) echo 150 ;;
    *) echo 0 ;;
  esac
}
phase() {  # phase NAME
  local name=$1 cap t
  cap=$(( $(cap_of "$name") * SLOW ))
  [ "$cap" -gt 0 ] || fail "unknown phase $name (known: minilm-eager smollm2-lora correctness minilm-compile)"
  t=$(left); [ "$t" -gt "$cap" ] && t=$cap
  if [ "$t" -lt 20 ]; then
    say "$name: skipped, out of time"
    echo "{\"phase\": \"$name\", \"error\": \"skipped: the script's time budget ran out\"}" >"$PHASES_DIR/$name.json"
    return
  fi
  say "$name: start (limit ${t}s)"
  timeout -k 10 "$t" "$PY" benchmarks/bench_gpu.py --phase "$name" --assets "$ASSETS" \
    --out "$PHASES_DIR/$name.json" $([ "$SMOKE" = 1 ] && echo --smoke) >>"$LOG" 2>&1
  local rc=$?
  if [ ! -s "$PHASES_DIR/$name.json" ]; then
    local why="exit code $rc"; { [ "$rc" = 124 ] || [ "$rc" = 137 ]; } && why="timed out after ${t}s"
    echo "{\"phase\": \"$name\", \"error\": \"$why\"}" >"$PHASES_DIR/$name.json"
  fi
  say "$name: done (rc=$rc)"
}

for name in $PHASES; do phase "$name"; done

"$PY" benchmarks/bench_gpu.py --report "$PHASES_DIR" --out-dir "$OUT" | tee -a "$LOG"
rc=${PIPESTATUS[0]}
say "finished (exit $rc); results in $OUT"
exit "$rc"
