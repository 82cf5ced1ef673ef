#!/usr/bin/env bash
# How long each gateway's worker threads wait for a CPU while they could run, Strait vs nginx
# (two workers each, as the comparison runs them), under `wrk -t1 -c64` on the last CPU: a
# worker waiting for a CPU holds up every connection it serves, which shows in the p99 of a
# closed-loop load. `perf sched record` traces the scheduler for 2 s in the middle of each 5 s
# run; per worker thread it prints how many times it waited (runnable, not running), the p99
# and the longest wait, how many waits exceeded 1 and 2 ms, and how many times it ran for more
# than 2 ms without sleeping.
#
#   scripts/sched-waits.sh [ROUNDS] [SIDE...]   (default: 2 rounds of strait nginx)
#
# STRAIT_SW_LOAD=echo runs 64-byte WebSocket round trips on 100 connections instead of wrk.
# SIDE is strait, strait-unbound (`--worker-cpu-affinity off`) or nginx; the sides alternate
# within each round. Needs the release build, nginx, wrk, perf and python3
# (scripts/install-bench-tools.sh; perf from linux-perf); perf needs the sched tracepoints
# (root, or kernel.perf_event_paranoid ≤ -1). Loopback only. Ports: STRAIT_SW_PORT (default
# 19880) and the next four.
set -euo pipefail
source "$(dirname "$0")/gateways.sh"
rounds=${1:-2}
workload=${STRAIT_SW_LOAD:-http}
sides=("${@:2}")
((${#sides[@]})) || sides=(strait nginx)
require nginx wrk perf python3 taskset openssl
start_echo "${STRAIT_SW_PORT:-19880}"
# nginx as the comparison runs it: two workers, a master process.
sed -i -e "s#^worker_processes 1;#worker_processes 2;#" -e "s#master_process off#master_process on#" "$dir/nginx.conf"
cpu=$(($(nproc) - 1))

# Per thread of the gateway, from `perf sched script`: waits from a wake-up or a preemption
# to the next time it runs, and runs from switch-in to switch-out.
summarise() {
    python3 - "$1" <<'PY'
import collections, re, sys
waits, runs = collections.defaultdict(list), collections.defaultdict(list)
ready, running, names = {}, {}, {}
worker = re.compile(r"strait-worker|^nginx$")
for line in open(sys.argv[1]):
    m = re.search(r"\s(\d+\.\d+):\s+sched:(\w+):(.*)", line)
    if not m:
        continue
    t, event, rest = float(m.group(1)), m.group(2), m.group(3)
    if event == "sched_switch":
        s = re.search(r"prev_comm=(.*?) prev_pid=(\d+) .*prev_state=(\S+) ==> next_comm=(.*?) next_pid=(\d+)", rest)
        if not s:
            continue
        prev, pid, state, nxt, npid = s.groups()
        if worker.search(prev):
            if pid in running:
                runs[pid].append(t - running.pop(pid))
            if state.startswith("R"):
                ready[pid] = t
        if worker.search(nxt):
            names[npid] = nxt
            running[npid] = t
            if npid in ready:
                waits[npid].append(t - ready.pop(npid))
    elif event in ("sched_waking", "sched_wakeup"):
        s = re.search(r"comm=(.*?) pid=(\d+)", rest)
        if s and worker.search(s.group(1)) and s.group(2) not in ready and s.group(2) not in running:
            ready[s.group(2)] = t
for pid in sorted(waits, key=lambda p: names[p]):
    w, r = sorted(waits[pid]), runs[pid]
    over = lambda v, ms: sum(x > ms / 1e3 for x in v)
    print(f"  {names[pid] + ':' + pid:24} waits {len(w):6}  p99 {w[int(len(w) * 0.99)] * 1e3:.3f} ms"
          f"  longest {w[-1] * 1e3:.2f} ms  over 1 ms {over(w, 1):3}  over 2 ms {over(w, 2):3}"
          f"  runs over 2 ms {over(r, 2):3}")
PY
}

for round in $(seq "$rounds"); do
    for side in "${sides[@]}"; do
        case $side in
            strait) "$strait" run --config "$dir/strait.yaml" >/dev/null 2>&1 & ;;
            strait-unbound) "$strait" run --config "$dir/strait.yaml" --worker-cpu-affinity off >/dev/null 2>&1 & ;;
            nginx) nginx -p "$dir" -c "$dir/nginx.conf" >/dev/null 2>&1 & ;;
            *) echo "error: unknown side $side (strait, strait-unbound, nginx)" >&2; exit 2 ;;
        esac
        pid=$!
        pids+=("$pid")
        wait_listening
        if [[ $workload == echo ]]; then
            taskset -c "$cpu" "$bench" echo --json --url "ws://$gw/" --sources 4 --conns 100 --warmup 1 --duration 5 >"$dir/load" &
        else
            taskset -c "$cpu" wrk -t1 -c64 -d1s "http://$gw/bench/http" >/dev/null
            taskset -c "$cpu" wrk -t1 -c64 -d5s --latency "http://$gw/bench/http" >"$dir/load" &
        fi
        load=$!
        sleep 1.5
        perf sched record -o "$dir/sched.data" -- sleep 2 >/dev/null 2>&1
        wait "$load"
        if [[ $workload == echo ]]; then
            echo "== $side, round $round: $(tail -1 "$dir/load" | sed -E 's/.*"messages_per_sec":([0-9]+).*"p50_us":([0-9]+).*"p99_us":([0-9]+).*/\1 messages\/s, p50 \2 µs, p99 \3 µs/')"
        else
            echo "== $side, round $round: $(awk '/Requests\/sec/ { print $2 }' "$dir/load") requests/s," \
                "p50 $(awk '$1 == "50%" { print $2 }' "$dir/load"), p99 $(awk '$1 == "99%" { print $2 }' "$dir/load")"
        fi
        perf sched script -i "$dir/sched.data" 2>/dev/null >"$dir/sched.txt"
        summarise "$dir/sched.txt"
        kill "$pid"
        wait "$pid" 2>/dev/null || true
    done
done
