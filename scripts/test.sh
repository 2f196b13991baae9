#!/usr/bin/env bash
# The whole test suite, as README.md documents it: ./scripts/test.sh (from any directory).
#
#   1. build the binaries            cargo build --workspace --bins
#      agent CLIs                    scripts/agent-clis.sh: Claude Code, Codex CLI, gemini-cli
#                                    pinned (tests/agents/), cached in ~/.cache/business2api
#   2. Rust tests                    cargo nextest run --workspace --profile ci
#                                    (cargo test --workspace --all-targets without cargo-nextest)
#   3. doc tests                     cargo test --workspace --doc
#   4. Python venvs for tests/sdk    .venv/ (requirements.txt) and .venv-legacy/
#                                    (requirements-legacy.txt), rebuilt when those change
#   5. Official SDKs                 pytest tests/sdk (openai, anthropic 2.x, google-genai 3.x)
#                                    against the binaries built in step 1, then
#                                    tests/sdk/test_anthropic.py again with anthropic 0.69
#   6. Admin panel in a browser      pytest tests/panel (Playwright for Python in .venv-panel,
#                                    tests/panel/requirements.txt) driving Debian's
#                                    /usr/bin/chromium against the binaries built in step 1;
#                                    screenshots of every page in <target>/panel-artifacts
#   7. Hostile input                 bench/hostile.sh: the release binary under the memory
#                                    probe's shapes (peak RSS bound, /health within 100 ms)
#
# Needs: a Rust toolchain, python3 with the venv module (Debian: python3-venv), chromium and
# chromedriver (Debian: chromium, chromium-driver) for the real-browser re-login tests,
# microsocks and tinyproxy (Debian packages of those names) for the egress proxy tests, node and
# npm for the agent CLI tests, and PyPI / npm registry access the first time (and whenever the
# pins change). Without node/npm the agent CLI tests are skipped with a warning, except under CI
# (CI set), where that is an error. Exits non-zero on the first failure.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

SDK_DIR=tests/sdk
REQUIREMENTS=$SDK_DIR/requirements.txt
LEGACY_REQUIREMENTS=$SDK_DIR/requirements-legacy.txt
VENV=.venv
LEGACY_VENV=.venv-legacy
PANEL_DIR=tests/panel
PANEL_REQUIREMENTS=$PANEL_DIR/requirements.txt
PANEL_VENV=.venv-panel
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

# The re-login tests drive a real Chromium through chromedriver; without them they would fail
# deep inside the run, so say it here.
for tool in chromium chromedriver; do
    command -v "$tool" >/dev/null 2>&1 \
        || die "$tool is missing: the re-login tests need it (Debian: apt-get install chromium chromium-driver)"
done
# The egress proxy tests run real SOCKS5 and HTTP CONNECT proxies on loopback.
for tool in microsocks tinyproxy; do
    command -v "$tool" >/dev/null 2>&1 \
        || die "$tool is missing: the egress proxy tests need it (Debian: apt-get install microsocks tinyproxy)"
done

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

# --- Agent CLIs -------------------------------------------------------------------------------
step "Agent CLIs for tests/tests/agents.rs: scripts/agent-clis.sh"
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    AGENT_CLI_DIR=$("$ROOT/scripts/agent-clis.sh" | tail -n 1) \
        || die "scripts/agent-clis.sh could not install the agent CLIs (is the npm registry reachable?)"
    export AGENT_CLI_DIR
    echo "    node $(node --version), npm $(npm --version); CLIs in $AGENT_CLI_DIR"
elif [[ -n ${CI:-} ]]; then
    die "node and npm are needed for the agent CLI tests (Debian: apt-get install nodejs npm)"
else
    printf '\n*** WARNING: node/npm not found: the agent CLI tests (tests/tests/agents.rs) are SKIPPED.\n' >&2
    printf '*** Install node and npm to run them.\n\n' >&2
    export BUSINESS2API_SKIP_AGENT_CLIS=1
fi
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

# --- 4. Python venvs --------------------------------------------------------------------------
# Two environments: .venv (current openai, anthropic 2.x, google-genai 3.x) and .venv-legacy
# (anthropic 0.69, which authenticates with x-api-key). Each is rebuilt when its requirements
# file or the interpreter changes.
command -v python3 >/dev/null 2>&1 \
    || die "python3 is not installed (Debian: sudo apt-get install python3 python3-venv)"

ensure_venv() { # <venv dir> <requirements file> <python imports that must work>
    local venv=$1 requirements=$2 imports=$3
    local stamp=$venv/.requirements.sha256 want have
    want=$( { cat "$requirements"; python3 -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)
    have=$(cat "$stamp" 2>/dev/null || true)
    if [[ $want == "$have" ]] && "$venv/bin/python" -c "import $imports" >/dev/null 2>&1; then
        echo "    $venv is up to date with $requirements"
        return
    fi
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        die "python3 cannot create virtual environments: the venv/ensurepip module is missing.
       On Debian/Ubuntu install it with:  sudo apt-get install python3-venv"
    fi
    echo "    (re)creating $venv from $requirements"
    rm -rf "$venv"
    python3 -m venv "$venv"
    # Pins are exact and complete (dependencies included); --no-deps would hide a missing one,
    # so let pip check the set instead.
    if ! "$venv/bin/python" -m pip install --disable-pip-version-check --no-input --quiet \
            -r "$requirements"; then
        rm -rf "$venv"
        die "pip could not install $requirements (is PyPI reachable?)"
    fi
    "$venv/bin/python" -m pip check --disable-pip-version-check
    echo "$want" >"$stamp"
}

step "Python venvs for $SDK_DIR ($VENV, $LEGACY_VENV) and $PANEL_DIR ($PANEL_VENV)"
ensure_venv "$VENV" "$REQUIREMENTS" "openai, anthropic, google.genai, pytest"
ensure_venv "$LEGACY_VENV" "$LEGACY_REQUIREMENTS" "anthropic, pytest"
# Playwright drives Debian's Chromium; its own browser download is never needed.
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 ensure_venv "$PANEL_VENV" "$PANEL_REQUIREMENTS" "playwright.sync_api, pytest"
for v in "$VENV" "$LEGACY_VENV" "$PANEL_VENV"; do
    "$v/bin/python" -m pip freeze --disable-pip-version-check \
        | grep -E '^(openai|anthropic|google-genai|playwright|pytest)==' | sed "s|^|    $v: |"
done
step_done

# --- 5. SDK tests -----------------------------------------------------------------------------
run_pytest() { # <venv> <sdk variant> <pytest args...>
    local venv=$1 variant=$2
    shift 2
    BUSINESS2API_BIN=$BUSINESS2API_BIN UPSTREAM_SIM_BIN=$UPSTREAM_SIM_BIN PYTHONDONTWRITEBYTECODE=1 \
        SDK_VARIANT=$variant \
        timeout --foreground --kill-after=30 "$PYTEST_TIMEOUT_S" \
        "$venv/bin/python" -m pytest "$@" -v
}

step "Official SDKs against the running binary: pytest $SDK_DIR ($VENV)"
run_pytest "$VENV" current "$ROOT/$SDK_DIR"
step_done

step "Legacy anthropic SDK (x-api-key) against the running binary: pytest $SDK_DIR/test_anthropic.py ($LEGACY_VENV)"
run_pytest "$LEGACY_VENV" legacy "$ROOT/$SDK_DIR/test_anthropic.py"
step_done

step "Admin panel in Chromium (Playwright) against the running binary: pytest $PANEL_DIR ($PANEL_VENV)"
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 PANEL_ARTIFACTS=$TARGET_DIR/panel-artifacts \
    CHROMIUM_BIN=$(command -v chromium) \
    run_pytest "$PANEL_VENV" panel "$ROOT/$PANEL_DIR"
echo "    screenshots: $TARGET_DIR/panel-artifacts"
step_done

step "Hostile input against the release binary: bench/hostile.sh"
"$ROOT/bench/hostile.sh"
step_done

current_step=""
printf '\n==> All tests passed in %ss\n' "$((SECONDS - suite_started))"
