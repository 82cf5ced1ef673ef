#!/usr/bin/env bash
# HTTP latency at the same load for both gateways, so their percentiles compare work per
# request, not throughput — in the comparison's closed loop a gateway that serves fewer
# requests per second answers each later. nginx (2 workers, the comparison's configuration)
# and Strait (its default workers) alternate, each fresh, 1 s of warm-up then 5 s recorded,
# PAIRS times (default 4), the load generator on CPU 1. Two generators:
#
#   LOAD=wrk  (default) wrk -t1 -c64 with DELAY ms (default 2) between each connection's
#             requests: ~20k requests/s here. wrk sends a delayed request on its next
#             millisecond tick, so requests come in bursts of many connections at once.
#   LOAD=oha  oha -c64 at a fixed RATE (default 20000 requests/s), timed from when each
#             request was due (--latency-correction): an open loop, arrivals spread out.
#             oha comes from crates.io: scripts/install-bench-tools.sh --oha.
#
#   LOAD=oha RATE=20000 PAIRS=4 scripts/paced.sh
#
# `strait-bench compare` runs the oha variant itself when oha is installed (its "HTTP at the
# same load" rows, at fractions of nginx's measured rate); this script is the quick way to
# try other rates, or wrk's bursts.
#
# Needs the release build, nginx and wrk or oha (scripts/install-bench-tools.sh). Loopback
# only; every run is bounded. Ports: STRAIT_PACED_PORT (default 19280) and the next four.
set -euo pipefail
source "$(dirname "$0")/gateways.sh"
load_tool=${LOAD:-wrk}
[[ $load_tool == wrk || $load_tool == oha ]] || { echo "error: LOAD is wrk or oha" >&2; exit 1; }
require nginx "$load_tool" openssl taskset
start_echo "${STRAIT_PACED_PORT:-19280}"
sed -i -e 's/^worker_processes .*/worker_processes 2;/' -e 's/master_process off/master_process on/' "$dir/nginx.conf"
cat >"$dir/paced.lua" <<LUA
delay = function() return ${DELAY:-2} end
LUA
cat bench/wrk-report.lua >>"$dir/paced.lua"

# Requests/s, then p50, p99 and p99.9 in µs, of one recorded run.
measure() {
    local url="http://$gw/bench/http" out
    if [[ $load_tool == oha ]]; then
        local oha=(taskset -c 1 oha -c64 -q "${RATE:-20000}" --latency-correction --no-tui --output-format json)
        "${oha[@]}" -z 1s "$url" >/dev/null
        out=$("${oha[@]}" -z 5s "$url")
        # In its JSON, the first "requestsPerSec" is the summary's; percentiles in seconds.
        awk '$1 == "\"requestsPerSec\":" && !rate { gsub(",", "", $2); rate = $2 }
             /"latencyPercentiles"/ { in_p = 1 }
             in_p && $1 ~ /^"p(50|99|99\.9)":$/ { gsub(",", "", $2); p[$1] = $2 * 1e6 }
             in_p && /}/ { in_p = 0 }
             END { printf "%.0f %.0f %.0f %.0f\n", rate, p["\"p50\":"], p["\"p99\":"], p["\"p99.9\":"] }' <<<"$out"
    else
        taskset -c 1 wrk -t1 -c64 -d1s "$url" >/dev/null
        out=$(taskset -c 1 wrk -t1 -c64 -d5s -s "$dir/paced.lua" "$url")
        local field
        field() { grep -o "$1=[0-9]*" <<<"$out" | cut -d= -f2; }
        echo "$(awk '/^Requests\/sec/ {printf "%.0f", $2}' <<<"$out") $(field p50_us) $(field p99_us) $(field p999_us)"
    fi
}

printf '%-5s %-7s %12s %8s %8s %8s\n' pair gateway requests/s p50_us p99_us p999_us
for pair in $(seq "${PAIRS:-4}"); do
    for side in nginx strait; do
        start_gateway "$side"
        read -r rate p50 p99 p999 < <(measure)
        kill "$pid"; wait "$pid" 2>/dev/null || true
        printf '%-5s %-7s %12s %8s %8s %8s\n' "$pair" "$side" "$rate" "$p50" "$p99" "$p999"
    done
done
