#!/usr/bin/env bash
# The Python package's tests: build `tenpak` (tenpak-py/, PyO3 + maturin) into a virtualenv in
# target/py on the same release build as `cargo test --release`, then run its pytest suite
# against the real test models. Part of the README's test command.
#
# The venv also gets the peers the GGUF output is checked against: the `gguf` package and
# llama-cpp-python (llama.cpp 0.3.36, built from source once: about 5 minutes on 2 cores). On
# x86-64 llama.cpp is built for AVX2/FMA/F16C rather than the build machine's own features: a
# native build uses AMX tile instructions where the CPU lists them, which some virtual machines
# refuse at run time (SIGILL).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/py
if [ ! -x "$venv/bin/pytest" ] || [ ! -x "$venv/bin/maturin" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "maturin>=1.5,<2" numpy pytest
fi
if ! "$venv/bin/python" -c "import gguf, llama_cpp" 2>/dev/null; then
    if [ "$(uname -m)" = x86_64 ]; then
        export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON}"
    fi
    echo "test-python: installing gguf and llama-cpp-python into $venv (builds llama.cpp once)" >&2
    # From source with the flags above, never a cached wheel built with others.
    "$venv/bin/pip" install -q --no-cache-dir --no-binary llama-cpp-python \
        gguf==0.19.0 llama-cpp-python==0.3.36
fi
VIRTUAL_ENV="$PWD/$venv" "$venv/bin/maturin" develop --release -q -m tenpak-py/Cargo.toml
"$venv/bin/pytest" -q tenpak-py/tests
