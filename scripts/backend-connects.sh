#!/usr/bin/env bash
# Backend connections opened for clients that come and go: nginx (2 workers) and Strait
# (default workers) each serve ROUNDS runs of `h2load --h1 -c16`, 16 client connections of
# REQUESTS requests each, one run after another; the script counts the connections to the echo
# backend left in TIME_WAIT (one per backend connection the gateway opened and closed) and
# those still open, and the wall time of the runs.
#
#   scripts/backend-connects.sh [ROUNDS] [REQUESTS]   (default 25 runs of 20 requests; ~10 s)
#
# Needs the release build, nginx and h2load (scripts/install-bench-tools.sh). Loopback only.
# Ports: STRAIT_CONNECTS_PORT (default 19380) and the next four; TIME_WAIT sockets to the echo
# port from an earlier run within a minute are subtracted (counted before each side starts).
set -euo pipefail
rounds=${1:-25}
requests=${2:-20}
source "$(dirname "$0")/gateways.sh"
require nginx h2load ss
port=${STRAIT_CONNECTS_PORT:-19380}
start_echo "$port"
sed -e 's/master_process off/master_process on/' -e 's/worker_processes 1;/worker_processes 2;/' \
    "$dir/nginx.conf" >"$dir/nginx-2.conf"
echo_port=$((port + 1))
to_echo() { ss -Htan state "$1" "( dport = :$echo_port )" | wc -l; }
printf '%-7s %8s %9s %10s %12s %8s\n' gateway clients requests time_wait still_open ms
for side in nginx strait; do
    case $side in
        nginx) nginx -p "$dir" -c "$dir/nginx-2.conf" >/dev/null 2>&1 & ;;
        strait) "$strait" run --config "$dir/strait.yaml" >/dev/null 2>&1 & ;;
    esac
    pid=$!
    pids+=("$pid")
    wait_listening
    before=$(to_echo time-wait)
    start=$(date +%s%N)
    for _ in $(seq "$rounds"); do
        h2load --h1 -n $((16 * requests)) -c 16 "http://$gw/bench/http" >/dev/null
    done
    end=$(date +%s%N)
    printf '%-7s %8d %9d %10d %12d %8d\n' "$side" $((16 * rounds)) "$requests" \
        $(($(to_echo time-wait) - before)) "$(to_echo established)" $(((end - start) / 1000000))
    kill "$pid"; wait "$pid" 2>/dev/null || true
done
