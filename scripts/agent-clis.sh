#!/usr/bin/env bash
# Installs the pinned coding-agent CLIs (tests/agents/package.json + package-lock.json:
# Claude Code, Codex CLI, gemini-cli) that tests/tests/agents.rs runs against the gateway, into
# a cache outside the repository, and prints that directory. Reinstalls only when the lock file,
# node or npm changes.
#
#   AGENT_CLI_DIR   where to install (default: ~/.cache/business2api/agent-clis)
#
# Needs node and npm and the npm registry (the first time). About 0.9 GB.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SRC=tests/agents
DIR=${AGENT_CLI_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/business2api/agent-clis}

command -v node >/dev/null 2>&1 || { echo "agent-clis: node is not installed" >&2; exit 1; }
command -v npm >/dev/null 2>&1 || { echo "agent-clis: npm is not installed" >&2; exit 1; }

want=$( { cat "$SRC/package.json" "$SRC/package-lock.json"; node --version; npm --version; } \
    | sha256sum | cut -d' ' -f1)
have=$(cat "$DIR/.installed.sha256" 2>/dev/null || true)
bins=(claude codex gemini)
installed() {
    local b
    for b in "${bins[@]}"; do
        [[ -x $DIR/node_modules/.bin/$b ]] || return 1
    done
}
if [[ $want == "$have" ]] && installed; then
    echo "$DIR" 
    exit 0
fi

mkdir -p "$DIR"
cp "$SRC/package.json" "$SRC/package-lock.json" "$DIR/"
rm -f "$DIR/.installed.sha256"
# npm ci: exactly the lock file's versions; install scripts run (Claude Code's links its
# native binary into place).
(cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error >&2) \
    || { echo "agent-clis: npm ci failed in $DIR (is the npm registry reachable?)" >&2; exit 1; }
installed || { echo "agent-clis: npm ci left a CLI missing in $DIR/node_modules/.bin" >&2; exit 1; }
echo "$want" >"$DIR/.installed.sha256"
echo "$DIR"
