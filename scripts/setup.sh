#!/usr/bin/env bash
# Creates (once) the project's virtual environment in .venv and installs nemo_ref with every extra.
# torch is installed first, pinned to the CPU build that pip finds for this machine: a bare `torch`
# requirement on a machine without torch pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.nemo_ref-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q "torch==${NEMO_REF_TORCH:-2.13.0}"
  .venv/bin/python -m pip install -q -e ".[server,structured,notebooks,dev]"
  # The oracles extra (llama-cpp-python) compiles llama.cpp from source once; pip's wheel cache serves
  # later set-ups. Only the library is needed: no native-CPU code, tests, examples, tools or server.
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF" \
    .venv/bin/python -m pip install -q -e ".[oracles]"
  touch "$stamp"
fi
