#!/usr/bin/env bash
# HTTP latency at the same load for both gateways: wrk -t1 -c64 with DELAY ms (default 2)
# between each connection's requests, so both serve about the same rate (~20k requests/s here,
# well under either's maximum) and their percentiles compare work per request, not
# throughput — in the comparison's closed loop a gateway that serves fewer requests per second
# answers each later. nginx (2 workers, the comparison's configuration) and Strait (its
# default workers) alternate, each fresh, 1 s of warm-up then 5 s recorded, PAIRS times
# (default 4). wrk sends a delayed request on its next millisecond tick, so the load comes in
# bursts of many connections at once; both gateways get the same bursts.
#
#   DELAY=2 PAIRS=4 scripts/paced.sh
#
# Needs the release build, nginx and wrk (scripts/install-bench-tools.sh). Loopback only;
# every run is bounded. Ports: STRAIT_PACED_PORT (default 19280) and the next four.
set -euo pipefail
source "$(dirname "$0")/gateways.sh"
require nginx wrk openssl taskset
start_echo "${STRAIT_PACED_PORT:-19280}"
sed -i -e 's/^worker_processes .*/worker_processes 2;/' -e 's/master_process off/master_process on/' "$dir/nginx.conf"
cat >"$dir/paced.lua" <<LUA
delay = function() return ${DELAY:-2} end
LUA
cat bench/wrk-report.lua >>"$dir/paced.lua"

printf '%-5s %-7s %12s %8s %8s %8s\n' pair gateway requests/s p50_us p99_us p999_us
for pair in $(seq "${PAIRS:-4}"); do
    for side in nginx strait; do
        start_gateway "$side"
        taskset -c 1 wrk -t1 -c64 -d1s "http://$gw/bench/http" >/dev/null
        out=$(taskset -c 1 wrk -t1 -c64 -d5s -s "$dir/paced.lua" "http://$gw/bench/http")
        kill "$pid"; wait "$pid" 2>/dev/null || true
        rate=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
        field() { grep -o "$1=[0-9]*" <<<"$out" | cut -d= -f2; }
        printf '%-5s %-7s %12.0f %8s %8s %8s\n' "$pair" "$side" "$rate" "$(field p50_us)" "$(field p99_us)" "$(field p999_us)"
    done
done
