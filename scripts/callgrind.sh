#!/usr/bin/env bash
# Instructions per unit of work, Strait vs nginx, under valgrind's callgrind: repeatable on a
# noisy shared machine where throughput is not. For each gateway and each workload: start it
# under callgrind in front of `strait echo`, warm up for 2 s, zero the counters, load it for
# 8 s, dump, and divide the instructions by the units the load generator completed.
#
#   scripts/callgrind.sh [http|echo|connect]...   (default: all three)
#
#   http     keep-alive GETs: wrk -t1 -c8                         (unit: request)
#   echo     64-byte WebSocket round trips on 50 connections      (unit: message echoed)
#   connect  WebSocket connect + upgrade + close, 8 workers        (unit: session)
#
# Needs the release build (cargo build --release -p strait-cli -p strait-bench), nginx, wrk
# and valgrind (scripts/install-bench-tools.sh installs them). Loopback only; every run is
# bounded (10 s of load each). Ports: STRAIT_CG_PORT (default 19080) and the next one.
# STRAIT_CG_KEEP=DIR keeps the profiles there (cg.MODE.GATEWAY.*) for callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/.."
modes=("$@")
((${#modes[@]})) || modes=(http echo connect)
for tool in valgrind callgrind_control nginx wrk; do
    command -v "$tool" >/dev/null || { echo "error: $tool is missing (scripts/install-bench-tools.sh)" >&2; exit 1; }
done
strait=target/release/strait
bench=target/release/strait-bench
[[ -x $strait && -x $bench ]] || { echo "error: build first: cargo build --release -p strait-cli -p strait-bench" >&2; exit 1; }

port=${STRAIT_CG_PORT:-19080}
gw=127.0.0.1:$port
echo_addr=127.0.0.1:$((port + 1))
dir=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

"$strait" echo --listen "$echo_addr" >/dev/null 2>&1 &
pids+=($!)
cat >"$dir/strait.yaml" <<YAML
environments:
  - name: bench
    listen: $gw
    websocket: true
    access_log: { format: off }
proxies:
  - name: echo
    path: /*
    backend: http://$echo_addr/
    deploy: [bench]
YAML
# nginx as the comparison configures it, in one process (callgrind follows one process).
sed -e "s#{{PREFIX}}#$dir#g" -e "s#{{LISTEN}}#$gw#" -e "s#{{ECHO}}#$echo_addr#" \
    -e "s#{{WORKERS}}#1#" -e "s#{{NOFILE}}#4096#" -e "s#{{WORKER_CONNECTIONS}}#4096#" \
    -e "s#master_process on#master_process off#" bench/nginx.conf.template >"$dir/nginx.conf"

# Prints the units one bounded load run completed.
load() {
    local mode=$1 secs=$2
    case $mode in
        http) wrk -t1 -c8 -d"${secs}s" "http://$gw/bench/http" | awk '/requests in/ {print $1}' ;;
        echo) "$bench" echo --json --url "ws://$gw/" --sources 4 --conns 50 --warmup 0 --duration "$secs" \
                | tail -1 | sed -E 's/.*"messages":([0-9]+).*/\1/' ;;
        connect) "$bench" connect --json --url "ws://$gw/" --sources 4 --workers 8 --duration "$secs" \
                | tail -1 | sed -E 's/.*"sessions":([0-9]+).*/\1/' ;;
        *) echo "error: unknown mode $mode" >&2; exit 1 ;;
    esac
}

printf '%-8s %-7s %10s %14s\n' mode gateway units instructions/unit
for mode in "${modes[@]}"; do
    for side in strait nginx; do
        out=$dir/cg.$mode.$side
        if [[ $side == strait ]]; then
            valgrind --tool=callgrind --callgrind-out-file="$out" "$strait" run --config "$dir/strait.yaml" >/dev/null 2>"$dir/vg.log" &
        else
            valgrind --tool=callgrind --callgrind-out-file="$out" nginx -p "$dir" -c "$dir/nginx.conf" >/dev/null 2>"$dir/vg.log" &
        fi
        pid=$!
        # Started (under valgrind that takes a few seconds) once it accepts connections.
        for _ in $(seq 150); do
            (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
            sleep 0.2
        done
        load "$mode" 2 >/dev/null
        callgrind_control -z "$pid" >/dev/null 2>&1
        units=$(load "$mode" 8)
        callgrind_control -d "$pid" >/dev/null 2>&1
        kill "$pid"; wait "$pid" 2>/dev/null || true
        ir=$(grep -h '^summary:\|^totals:' "$out".* 2>/dev/null | tail -1 | awk '{print $2}')
        printf '%-8s %-7s %10s %14s\n' "$mode" "$side" "$units" "$((ir / units))"
        if [[ -n ${STRAIT_CG_KEEP:-} ]]; then
            mkdir -p "$STRAIT_CG_KEEP" && mv "$out".* "$STRAIT_CG_KEEP"/
        fi
        rm -f "$out" "$out".*
    done
done
