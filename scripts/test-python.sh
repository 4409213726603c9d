#!/usr/bin/env bash
# The Python package's tests: build `tenpak` (tenpak-py/, PyO3 + maturin) into a virtualenv in
# target/py on the same release build as `cargo test --release`, then run its pytest suite
# against the real test model. Part of the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/py
if [ ! -x "$venv/bin/pytest" ] || [ ! -x "$venv/bin/maturin" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "maturin>=1.5,<2" numpy pytest
fi
VIRTUAL_ENV="$PWD/$venv" "$venv/bin/maturin" develop --release -q -m tenpak-py/Cargo.toml
"$venv/bin/pytest" -q tenpak-py/tests
