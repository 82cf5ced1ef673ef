//! HTTP/2 load comes from `h2load` (nghttp2); this module parses its summary (`req/s`, the
//! request counts) and its `--log-file` (one line per request: start time, status,
//! microseconds to the end of the response), from which the percentiles come.

use anyhow::{Context, Result, bail};

use crate::latency::{Percentiles, SharedHistogram};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct H2Report {
    pub requests_per_sec: f64,
    /// h2load's `failed`: network errors, resets and timeouts, and HTTP-level failures.
    pub errors: u64,
    pub latency: Percentiles,
}

/// Parses h2load's standard output and the log file it wrote.
pub fn parse(output: &str, log: &str) -> Result<H2Report> {
    let mut report = H2Report::default();
    let mut found_rate = false;
    for line in output.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("finished in ") {
            // "finished in 5.00s, 38421.40 req/s, 15.30MB/s"
            let rate = rest
                .split(", ")
                .find_map(|part| part.strip_suffix(" req/s"))
                .with_context(|| format!("no req/s in {line:?}"))?;
            report.requests_per_sec = rate.parse().context("req/s is not a number")?;
            found_rate = true;
        } else if let Some(rest) = line.strip_prefix("requests:") {
            // "requests: 10 total, 10 started, 10 done, 9 succeeded, 1 failed, 0 errored, 0 timeout"
            // `errored` and `timeout` are subsets of `failed`, which also counts 4xx and 5xx.
            for (count, what) in counts(rest) {
                if what == "failed" {
                    report.errors = count;
                }
            }
        }
    }
    if !found_rate {
        bail!("h2load printed no \"finished in\" line; its output was:\n{output}");
    }
    let histogram = SharedHistogram::new();
    let mut recorder = histogram.recorder();
    for line in log.lines() {
        let micros = line
            .split('\t')
            .nth(2)
            .and_then(|us| us.trim().parse().ok());
        if let Some(micros) = micros {
            recorder.record(std::time::Duration::from_micros(micros));
        }
    }
    drop(recorder);
    if histogram.count() == 0 {
        bail!("h2load's log file holds no request");
    }
    report.latency = histogram.percentiles();
    Ok(report)
}

/// "10 total, 9 succeeded" → (10, "total"), (9, "succeeded").
fn counts(text: &str) -> impl Iterator<Item = (u64, &str)> {
    text.split(',').filter_map(|part| {
        let (count, what) = part.trim().split_once(' ')?;
        Some((count.parse().ok()?, what.trim()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "\
starting benchmark...
Application protocol: h2c

finished in 6.00s, 38421.40 req/s, 15.30MB/s
requests: 192107 total, 192107 started, 192107 done, 192100 succeeded, 7 failed, 2 errored, 1 timeout
status codes: 192095 2xx, 0 3xx, 4 4xx, 1 5xx
traffic: 76.52MB (80232198) total, 7.60MB (7974385) headers (space savings 73.75%), 78.14MB (81938028) data
";

    #[test]
    fn the_summary_and_the_log_give_rate_errors_and_percentiles() {
        let log: String = (1..=1000)
            .map(|us| format!("1796329676818986\t200\t{us}\n"))
            .collect();
        let r = parse(OUTPUT, &log).unwrap();
        assert_eq!(r.requests_per_sec, 38421.40);
        assert_eq!(
            r.errors, 7,
            "failed: 5 HTTP-level, 2 errored (1 of them a timeout)"
        );
        // HDR at 3 significant digits: within 0.1 %.
        assert!((r.latency.p50_us - 500.0).abs() <= 0.5, "{:?}", r.latency);
        assert!((r.latency.p99_us - 990.0).abs() <= 1.0, "{:?}", r.latency);
        assert!((r.latency.max_us - 1000.0).abs() <= 1.0, "{:?}", r.latency);
    }

    #[test]
    fn output_without_a_rate_or_a_log_is_an_error() {
        assert!(parse("connect: Connection refused", "").is_err());
        assert!(parse(OUTPUT, "").is_err());
    }
}
