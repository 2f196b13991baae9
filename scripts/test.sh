#!/usr/bin/env bash
# The whole test suite, as README.md documents it: ./scripts/test.sh (from any directory).
#
#   1. build the binaries            cargo build --workspace --bins
#   2. Rust tests                    cargo nextest run --workspace --profile ci
#                                    (cargo test --workspace --all-targets without cargo-nextest)
#   3. doc tests                     cargo test --workspace --doc
#   4. Python venv for tests/sdk     .venv/, rebuilt when tests/sdk/requirements.txt changes
#   5. OpenAI Python SDK smoke test  pytest tests/sdk against the binaries built in step 1
#
# Needs: a Rust toolchain, python3 with the venv module (Debian: python3-venv), and PyPI access
# the first time (and whenever the requirements change). Exits non-zero on the first failure.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

SDK_DIR=tests/sdk
REQUIREMENTS=$SDK_DIR/requirements.txt
VENV=.venv
VENV_STAMP=$VENV/.requirements.sha256
# The whole SDK run (start-up, tests, shutdown) takes seconds; this only stops a hang.
PYTEST_TIMEOUT_S=${PYTEST_TIMEOUT_S:-600}

current_step=""
step_started=0
suite_started=$SECONDS

step() {
    current_step=$1
    step_started=$SECONDS
    printf '\n==> [%s] %s\n' "$(date +%H:%M:%S)" "$1"
}

step_done() {
    printf '    done in %ss\n' "$((SECONDS - step_started))"
}

on_exit() {
    local status=$?
    if [[ $status -ne 0 ]]; then
        printf '\n*** FAILED (exit status %s) in step: %s\n' "$status" "${current_step:-start-up}" >&2
    fi
}
trap on_exit EXIT

die() {
    printf '\nerror: %s\n' "$*" >&2
    exit 1
}

# --- 1. Build ---------------------------------------------------------------------------------
step "Build the binaries: cargo build --workspace --bins"
cargo build --workspace --bins
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
BUSINESS2API_BIN=$TARGET_DIR/debug/business2api
UPSTREAM_SIM_BIN=$TARGET_DIR/debug/upstream-sim
for bin in "$BUSINESS2API_BIN" "$UPSTREAM_SIM_BIN"; do
    [[ -x $bin ]] || die "the build did not produce $bin"
done
step_done

# --- 2. Rust tests ----------------------------------------------------------------------------
if cargo nextest --version >/dev/null 2>&1; then
    step "Rust tests: cargo nextest run --workspace --profile ci"
    cargo nextest run --workspace --profile ci
else
    step "Rust tests: cargo test --workspace --all-targets (cargo-nextest is not installed)"
    # --all-targets leaves out the doc tests; step 3 runs them.
    cargo test --workspace --all-targets
fi
step_done

# --- 3. Doc tests -----------------------------------------------------------------------------
step "Doc tests: cargo test --workspace --doc"
cargo test --workspace --doc
step_done

# --- 4. Python venv ---------------------------------------------------------------------------
step "Python venv for $SDK_DIR ($VENV)"
command -v python3 >/dev/null 2>&1 \
    || die "python3 is not installed (Debian: sudo apt-get install python3 python3-venv)"
# The stamp covers the requirements and the interpreter: either changing rebuilds the venv.
want=$( { cat "$REQUIREMENTS"; python3 -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)
have=$(cat "$VENV_STAMP" 2>/dev/null || true)
if [[ $want == "$have" ]] && "$VENV/bin/python" -c 'import openai, pytest' >/dev/null 2>&1; then
    echo "    $VENV is up to date with $REQUIREMENTS"
else
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        die "python3 cannot create virtual environments: the venv/ensurepip module is missing.
       On Debian/Ubuntu install it with:  sudo apt-get install python3-venv"
    fi
    echo "    (re)creating $VENV from $REQUIREMENTS"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    # Pins are exact and complete (dependencies included); --no-deps would hide a missing one,
    # so let pip check the set instead.
    if ! "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input --quiet \
            -r "$REQUIREMENTS"; then
        rm -rf "$VENV"
        die "pip could not install $REQUIREMENTS (is PyPI reachable?)"
    fi
    "$VENV/bin/python" -m pip check --disable-pip-version-check
    echo "$want" >"$VENV_STAMP"
fi
"$VENV/bin/python" -m pip freeze --disable-pip-version-check | grep -E '^(openai|pytest|httpx2)==' \
    | sed 's/^/    /'
step_done

# --- 5. SDK smoke test ------------------------------------------------------------------------
step "OpenAI Python SDK against the running binary: pytest $SDK_DIR"
BUSINESS2API_BIN=$BUSINESS2API_BIN UPSTREAM_SIM_BIN=$UPSTREAM_SIM_BIN PYTHONDONTWRITEBYTECODE=1 \
    timeout --foreground --kill-after=30 "$PYTEST_TIMEOUT_S" \
    "$VENV/bin/python" -m pytest "$ROOT/$SDK_DIR" -v
step_done

current_step=""
printf '\n==> All tests passed in %ss\n' "$((SECONDS - suite_started))"
