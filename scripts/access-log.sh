#!/usr/bin/env bash
# What the access log costs each gateway: nginx (2 workers) and Strait (default workers), each
# with its log off and on — nginx's default `combined` log, unbuffered; Strait's `combined` and
# `json` — in alternation, every run on a fresh gateway: `wrk -t1 -c64`, 1 s warm-up, 4 s
# recorded, the load generator on the last CPU. Prints each run, then each side's medians
# (requests/s, p99 µs).
#
#   scripts/access-log.sh [ROUNDS]   (default 5; ~2 minutes)
#
# Needs the release build, nginx and wrk (scripts/install-bench-tools.sh). Loopback only; the
# logs go to a temporary folder, removed after each run. Ports: STRAIT_LOG_PORT (default
# 19980) and the next four.
set -euo pipefail
rounds=${1:-5}
source "$(dirname "$0")/gateways.sh"
require nginx wrk openssl taskset
start_echo "${STRAIT_LOG_PORT:-19980}"
sed -e 's/master_process off/master_process on/' -e 's/worker_processes 1;/worker_processes 2;/' \
    "$dir/nginx.conf" >"$dir/nginx-off.conf"
sed "s|access_log off;|access_log $dir/access.log;|" "$dir/nginx-off.conf" >"$dir/nginx-on.conf"
grep -q "access_log $dir/access.log;" "$dir/nginx-on.conf" || { echo "error: no access_log line to turn on in nginx.conf" >&2; exit 1; }
cp "$dir/strait.yaml" "$dir/strait-off.yaml"
for format in combined json; do
    # The first environment (plain HTTP) logs; the TLS one stays as it is.
    sed "0,/access_log: { format: off }/ s|access_log: { format: off }|access_log: { format: $format, file: $dir/access.log }|" \
        "$dir/strait.yaml" >"$dir/strait-$format.yaml"
done
cpu=$(($(nproc) - 1))
sides=(nginx-off nginx-on strait-off strait-combined strait-json)
printf '%-5s %-16s %10s %10s\n' round side rate p99_us
for round in $(seq "$rounds"); do
    for k in "${!sides[@]}"; do
        side=${sides[$(((k + round) % ${#sides[@]}))]}
        case $side in
            nginx-*) nginx -p "$dir" -c "$dir/$side.conf" >/dev/null 2>&1 & ;;
            strait-*) "$strait" run --config "$dir/$side.yaml" >/dev/null 2>&1 & ;;
        esac
        pid=$!
        pids+=("$pid")
        wait_listening
        taskset -c "$cpu" wrk -t1 -c64 -d1s "http://$gw/bench/http" >/dev/null
        read -r rate p99 < <(taskset -c "$cpu" wrk -t1 -c64 -d4s --latency "http://$gw/bench/http" | awk '
            function us(v) { if (v ~ /us$/) return v + 0; if (v ~ /ms$/) return v * 1000; return v * 1e6 }
            /Requests\/sec/ { r = $2 } / 99%/ { p = us($2) } END { printf "%d %d\n", r, p }')
        printf '%-5s %-16s %10s %10s\n' "$round" "$side" "$rate" "$p99"
        echo "$side $rate $p99" >>"$dir/runs"
        kill "$pid"; wait "$pid" 2>/dev/null || true
        rm -f "$dir/access.log"
    done
done
# The median of column $2 over side $1's runs.
median() {
    awk -v side="$1" -v col="$2" '$1 == side { print $col }' "$dir/runs" | sort -n \
        | awk '{ v[NR] = $1 } END { print NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
echo "medians:"
for side in "${sides[@]}"; do
    printf '  %-16s %10s/s  p99 %s µs\n' "$side" "$(median "$side" 2)" "$(median "$side" 3)"
done
