-- wrk script used by `strait-bench compare`: after the run, print one machine-readable line
-- with the percentiles wrk's own --latency table lacks (p99.9) and the error counts.
-- Latencies are in microseconds.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "STRAIT_BENCH p50_us=%d p99_us=%d p999_us=%d max_us=%d requests=%d duration_us=%d socket_errors=%d non2xx=%d\n",
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max,
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status))
end
