#!/usr/bin/env bash
# The gateway benchmark: added latency, throughput and RSS of business2api against the upstream
# simulator with zero pacing, compared with calling the simulator directly and through a bare
# hyper reverse proxy (bench/src/bareproxy.rs; the side-by-side table is written by
# bench/side_by_side.py). Rewrites BENCHMARKS.md at the repository root (or $BENCH_OUT).
#
#   bench/run.sh
#
# Knobs (environment, all optional):
#   BENCH_WARMUP=300            sequential warm-up pairs
#   BENCH_LATENCY_REQUESTS=5000 sequential measured pairs (gateway non-stream + direct U2+U4)
#   BENCH_STREAM_REQUESTS=1000  sequential measured pairs with the gateway streaming
#   BENCH_CONCURRENCY=16,64     throughput concurrency levels
#   BENCH_DURATION_SECS=15      length of each measured throughput run
#   BENCH_ACCOUNTS=4            accounts in the simulator and the gateway's pool
#   BENCH_GATEWAY_WORKERS=      gateway http.workers (empty = one per CPU, the default)
#   BENCH_SIM_WORKERS=$(nproc)  simulator actix workers
#   BENCH_NOTE=                 a sentence about the machine, shown at the top of the file
#   BENCH_PIN=1                 pin the gateway and the bare proxy to CPU 1, the simulator and the
#                               load generator to CPU 0 (taskset; needs 2+ CPUs; 0 = no pinning)
#   BENCH_OUT=BENCHMARKS.md     output file
#
# Only 127.0.0.1 is contacted. Everything runs in a temporary directory removed on exit.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

warmup="${BENCH_WARMUP:-300}"
latency_requests="${BENCH_LATENCY_REQUESTS:-5000}"
stream_requests="${BENCH_STREAM_REQUESTS:-1000}"
concurrency="${BENCH_CONCURRENCY:-16,64}"
duration="${BENCH_DURATION_SECS:-15}"
accounts="${BENCH_ACCOUNTS:-4}"
gateway_workers="${BENCH_GATEWAY_WORKERS:-}"
sim_workers="${BENCH_SIM_WORKERS:-$(nproc)}"
note="${BENCH_NOTE:-}"
out="${BENCH_OUT:-$root/BENCHMARKS.md}"

log() { printf 'bench: %s\n' "$*" >&2; }

# What is measured runs on one core, what drives it on the other.
pin_subject=()
pin_load=()
pinning="none (every process on every core)"
if [[ "${BENCH_PIN:-1}" != 0 ]] && (( $(nproc) >= 2 )) && command -v taskset >/dev/null; then
    pin_subject=(taskset -c 1)
    pin_load=(taskset -c 0)
    pinning="gateway and bare proxy on CPU 1; simulator and load generator on CPU 0 (taskset)"
fi

log "building release binaries (cargo may wait for the target dir lock)"
cargo build --release -p business2api -p upstream-sim -p business2api-bench >&2

target_dir="$(cargo metadata --format-version 1 --no-deps 2>/dev/null \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
target_dir="${target_dir:-$root/target}"
bin="$target_dir/release"
for b in business2api upstream-sim loadgen bareproxy; do
    [[ -x "$bin/$b" ]] || { log "missing $bin/$b"; exit 1; }
done

work="$(mktemp -d "${TMPDIR:-/tmp}/b2a-bench.XXXXXX")"
sim_pid=""
gw_pid=""
proxy_pid=""
cleanup() {
    local status=$?
    for pid in "$gw_pid" "$proxy_pid" "$sim_pid"; do
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    wait 2>/dev/null || true
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Waits until $1 contains a line matching $2 and prints the first http://127.0.0.1:PORT in it.
wait_for_url() {
    local file="$1" pattern="$2" pid="$3" line
    for _ in $(seq 300); do
        line="$(grep -m1 "$pattern" "$file" 2>/dev/null || true)"
        if [[ -n "$line" ]]; then
            grep -o 'http://127\.0\.0\.1:[0-9]*' <<<"$line" | head -n1
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || { log "process $pid exited early"; return 1; }
        sleep 0.1
    done
    log "timed out waiting for '$pattern' in $file"
    return 1
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

loadavg_start="$(cut -d' ' -f1-3 /proc/loadavg)"
if [[ -z "$note" ]] && awk '{exit !($1 >= 0.5)}' /proc/loadavg; then
    note="The machine was not idle when this run started (load average $loadavg_start): \
other processes competed for the CPU, see the 'other processes' column below."
fi
note="${note:+$note }CPU pinning: $pinning."

# --- simulator ------------------------------------------------------------------------------
mkdir -p "$work/accounts" "$work/data"
"${pin_load[@]}" "$bin/upstream-sim" --listen 127.0.0.1:0 --pace-ms 0 --accounts "$accounts" \
    --workers "$sim_workers" --write-accounts "$work/accounts" \
    >"$work/sim.out" 2>"$work/sim.err" &
sim_pid=$!
sim_url="$(wait_for_url "$work/sim.out" 'upstream-sim listening on' "$sim_pid")"
log "simulator at $sim_url (pid $sim_pid)"

# The reference point: a bare reverse proxy (bench/src/bareproxy.rs) in front of the simulator.
"${pin_subject[@]}" "$bin/bareproxy" --listen 127.0.0.1:0 --upstream "$sim_url" >"$work/proxy.out" 2>"$work/proxy.err" &
proxy_pid=$!
proxy_url="$(wait_for_url "$work/proxy.out" 'bareproxy listening on' "$proxy_pid")"
log "bare proxy at $proxy_url (pid $proxy_pid)"

# --- gateway --------------------------------------------------------------------------------
# No daily cap: the runs send far more than the default 3000 text requests per account a day.
cp "$work"/accounts/*.json "$work/data/"
workers_json=""
[[ -n "$gateway_workers" ]] && workers_json=",\"http\":{\"workers\":$gateway_workers}"
cat >"$work/config.json" <<EOF
{"listen_addr":"127.0.0.1:0","data_dir":"$work/data","api_keys":["bench-key"],
 "pool":{"daily_limit_text":0},
 "gemini_business":{"auth_base_url":"$sim_url","api_base_url":"$sim_url"}$workers_json}
EOF
RUST_LOG=warn "${pin_subject[@]}" "$bin/business2api" serve --config "$work/config.json" \
    >"$work/gw.out" 2>"$work/gw.err" &
gw_pid=$!
gw_url="$(wait_for_url "$work/gw.out" 'business2api listening on' "$gw_pid")"
log "gateway at $gw_url (pid $gw_pid)"

# Start-up settles (the pool mints JWTs for the accounts at start), then idle RSS.
sleep 2
gw_rss_start="$(rss_kb "$gw_pid")"
sim_rss_start="$(rss_kb "$sim_pid")"
log "RSS after start-up: gateway ${gw_rss_start} kB, simulator ${sim_rss_start} kB"

# --- measurements ---------------------------------------------------------------------------
account_file="$(ls "$work"/accounts/*.json | head -n1)"
"${pin_load[@]}" "$bin/loadgen" run \
    --gateway "$gw_url" --key bench-key --sim "$sim_url" --account "$account_file" \
    --warmup "$warmup" --latency-requests "$latency_requests" \
    --stream-requests "$stream_requests" --concurrency "$concurrency" \
    --duration-secs "$duration" --gateway-pid "$gw_pid" --sim-pid "$sim_pid" \
    >"$work/results.json"

gw_hwm="$(hwm_kb "$gw_pid")"
sim_hwm="$(hwm_kb "$sim_pid")"

# The same direct turn through the bare proxy (the gateway idles meanwhile).
"${pin_load[@]}" "$bin/loadgen" proxy \
    --sim "$sim_url" --proxy "$proxy_url" --account "$account_file" \
    --warmup "$warmup" --requests "$latency_requests" --concurrency "$concurrency" \
    --duration-secs "$duration" --proxy-pid "$proxy_pid" --sim-pid "$sim_pid" \
    >"$work/proxy.json"
loadavg_end="$(cut -d' ' -f1-3 /proc/loadavg)"
if [[ -s "$work/gw.err" ]]; then
    log "gateway stderr (last lines):"
    tail -n 20 "$work/gw.err" >&2
fi

# --- the machine ----------------------------------------------------------------------------
cpu="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
cores="$(nproc)"
mem_kb="$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
kernel="$(uname -sr)"
os="$( (. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-}") || true)"
virt="$(systemd-detect-virt 2>/dev/null || echo unknown)"
rustc_v="$(rustc -V)"
date_utc="$(date -u '+%Y-%m-%d %H:%M UTC')"
gw_bytes="$(stat -c %s "$bin/business2api")"

"$bin/loadgen" render --results "$work/results.json" \
    --gateway-rss-start-kb "$gw_rss_start" --gateway-hwm-kb "$gw_hwm" \
    --sim-rss-start-kb "$sim_rss_start" --sim-hwm-kb "$sim_hwm" \
    --cpu "${cpu:-unknown}" --cores "$cores" --mem-total-kb "$mem_kb" --kernel "$kernel" \
    --os "${os:-unknown}" --virt "$virt" --rustc "$rustc_v" --date "$date_utc" \
    --loadavg-start "$loadavg_start" --loadavg-end "$loadavg_end" \
    --accounts "$accounts" --gateway-workers "${gateway_workers:-default (one per CPU)}" \
    --sim-workers "$sim_workers" --gateway-binary-bytes "$gw_bytes" \
    ${note:+--note "$note"} >"$work/BENCHMARKS.md"
python3 "$root/bench/side_by_side.py" "$work/results.json" "$work/proxy.json" "$pinning" \
    >>"$work/BENCHMARKS.md"
cat "$work/BENCHMARKS.md" >"$out"

cat "$work/results.json"
log "wrote $out"
