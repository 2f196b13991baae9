"""Appends the side-by-side section of BENCHMARKS.md: the gateway against a bare reverse proxy
(bench/src/bareproxy.rs), both measured in the same bench/run.sh session against the same
simulator and the same direct U2 + U4 turn.

    python3 bench/side_by_side.py results.json proxy.json "<pinning>" >> BENCHMARKS.md
"""

import json
import sys


def ms(us):
    return "–" if us is None else f"{us / 1000:+.3f} ms"


def cpu(us):
    return "–" if us is None else f"{us:.0f} µs"


def ratio(a, b):
    return "–" if a is None or b in (None, 0) else f"{a / b:.1f} ×"


def main():
    gw = json.load(open(sys.argv[1]))
    px = json.load(open(sys.argv[2]))
    lat, st = gw["latency"], gw["streaming"]
    gw_added = (lat["gateway"]["p50_us"] - lat["direct"]["p50_us"],
                lat["gateway"]["p99_us"] - lat["direct"]["p99_us"])
    gw_first = (st["gateway_first_content"]["p50_us"] - st["direct_first_chunk"]["p50_us"],
                st["gateway_first_content"]["p99_us"] - st["direct_first_chunk"]["p99_us"])
    px_added = (px["added_total"]["p50_us"], px["added_total"]["p99_us"])
    px_first = (px["added_first_chunk"]["p50_us"], px["added_first_chunk"]["p99_us"])

    print("\n## Side by side: a bare reverse proxy\n")
    print("The same session also runs `bareproxy` (crate `bench/`, hyper: forwards each request to "
          "the simulator over kept-alive connections and streams the answer back, nothing else) "
          "and makes the direct U2 + U4 turn through it, paired with the direct turn at "
          f"concurrency 1 ({px['pairs']} pairs), then under load. Both paths make the same two "
          "upstream calls, so the ratios compare like with like. LiteLLM is not measured yet.\n")
    print("| figure | bare proxy (2 calls) | business2api (2 calls) | ratio |")
    print("|---|---|---|---|")
    print(f"| added latency p50 / p99, concurrency 1 | {ms(px_added[0])} / {ms(px_added[1])} "
          f"| {ms(gw_added[0])} / {ms(gw_added[1])} | {ratio(gw_added[0], px_added[0])} (p50) |")
    print(f"| added time to first byte of the answer p50 / p99 (gateway: first content) "
          f"| {ms(px_first[0])} / {ms(px_first[1])} | {ms(gw_first[0])} / {ms(gw_first[1])} "
          f"| {ratio(gw_first[0], px_first[0])} (p50) |")
    rows = {r["concurrency"]: r for r in px["throughput"]}
    for row in gw["throughput"]:
        c = row["concurrency"]
        g = row["gateway"]
        g_cpu = None
        if g["cpu"].get("gateway_ms") is not None and g["requests"]:
            g_cpu = g["cpu"]["gateway_ms"] * 1000 / g["requests"]
        p_cpu = rows.get(c, {}).get("proxy_cpu_us_per_request")
        print(f"| CPU per request, concurrency {c}, non-streaming | {cpu(p_cpu)} | {cpu(g_cpu)} "
              f"| {ratio(g_cpu, p_cpu)} |")
    pinning = sys.argv[3] if len(sys.argv) > 3 else "none"
    print("\nThe issue's targets against this table: CPU per non-streaming request ≤ 4 × the bare "
          "proxy's; added latency p50 ≤ 0.10 ms, p99 ≤ 0.25 ms; added time to first content "
          f"p50 ≤ 0.15 ms. CPU pinning in this run: {pinning}.")


if __name__ == "__main__":
    main()
