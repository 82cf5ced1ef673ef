//! HTTP load comes from `wrk`; this module parses its output: `Requests/sec`, the `--latency`
//! distribution, and the extra line printed by `bench/wrk-report.lua` (p99.9, error counts).

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::latency::Percentiles;

/// The Lua script passed to wrk with `-s`.
pub const REPORT_SCRIPT: &str = include_str!("../../../bench/wrk-report.lua");
/// Appended to [`REPORT_SCRIPT`] for clients that come and go: every 20th request asks for
/// the connection to close.
pub const CHURN_SCRIPT: &str = include_str!("../../../bench/wrk-churn.lua");
/// Requests per client connection under [`CHURN_SCRIPT`].
pub const CHURN_REQUESTS: u32 = 20;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct WrkReport {
    pub requests_per_sec: f64,
    pub requests: u64,
    pub latency: Percentiles,
    /// Connect, read, write and timeout errors.
    pub socket_errors: u64,
    /// Responses with a status other than 2xx or 3xx.
    pub non2xx: u64,
}

/// Parses wrk's text output. `Requests/sec` is required; percentiles come from the script line
/// when present, otherwise from the `--latency` table (which has no p99.9).
pub fn parse(output: &str) -> Result<WrkReport> {
    let mut report = WrkReport::default();
    let mut found_rate = false;
    for line in output.lines().map(str::trim) {
        if let Some(rate) = line.strip_prefix("Requests/sec:") {
            report.requests_per_sec = rate.trim().parse()?;
            found_rate = true;
        } else if let Some(fields) = line.strip_prefix("STRAIT_BENCH ") {
            apply_script_line(&mut report, fields);
        } else if let Some((pct, value)) = line.split_once('%') {
            // "50%  434.00us" in the --latency table; percentiles from the script win.
            let Some(us) = duration_us(value.trim()) else {
                continue;
            };
            match pct.trim() {
                "50" if report.latency.p50_us == 0.0 => report.latency.p50_us = us,
                "99" if report.latency.p99_us == 0.0 => report.latency.p99_us = us,
                _ => {}
            }
        } else if line.contains("requests in") {
            if let Some(n) = line.split_whitespace().next().and_then(|n| n.parse().ok()) {
                report.requests = n;
            }
        } else if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            report.non2xx = n.trim().parse().unwrap_or(0);
        }
    }
    if !found_rate {
        bail!("wrk printed no \"Requests/sec\" line; its output was:\n{output}");
    }
    Ok(report)
}

fn apply_script_line(report: &mut WrkReport, fields: &str) {
    for field in fields.split_whitespace() {
        let Some((key, value)) = field.split_once('=') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        match key {
            "p50_us" => report.latency.p50_us = value,
            "p99_us" => report.latency.p99_us = value,
            "p999_us" => report.latency.p999_us = value,
            "max_us" => report.latency.max_us = value,
            "requests" => report.requests = value as u64,
            "socket_errors" => report.socket_errors = value as u64,
            "non2xx" => report.non2xx = value as u64,
            _ => {}
        }
    }
}

/// "434.00us", "0.88ms", "1.20s", "1.00m" → microseconds.
fn duration_us(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        _ => return None,
    };
    Some(number * scale)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_churn_script_closes_as_often_as_the_report_says() {
        let every = format!("sent % {} == 0", super::CHURN_REQUESTS);
        assert!(
            super::CHURN_SCRIPT.contains(&every),
            "{}",
            super::CHURN_SCRIPT
        );
    }

    use super::*;

    const SAMPLE: &str = "Running 10s test @ http://127.0.0.1:8080/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   635.91us    0.89ms  12.92ms   93.69%
    Req/Sec    58.17k     5.10k   66.49k    83.00%
  Latency Distribution
     50%  434.00us
     75%  563.00us
     90%    0.88ms
     99%    4.86ms
  581262 requests in 10.00s, 46.68MB read
  Non-2xx or 3xx responses: 10
Requests/sec:  58116.49
Transfer/sec:      4.67MB
";

    #[test]
    fn parses_the_latency_table() {
        let r = parse(SAMPLE).expect("parses");
        assert_eq!(r.requests_per_sec, 58116.49);
        assert_eq!(r.requests, 581262);
        assert_eq!(r.latency.p50_us, 434.0);
        assert_eq!(r.latency.p99_us, 4860.0);
        assert_eq!(r.non2xx, 10);
    }

    #[test]
    fn the_script_line_adds_p999() {
        let text = format!(
            "{SAMPLE}STRAIT_BENCH p50_us=430 p99_us=4800 p999_us=9000 max_us=12920 requests=581262 duration_us=10000000 socket_errors=2 non2xx=10\n"
        );
        let r = parse(&text).expect("parses");
        assert_eq!(r.latency.p50_us, 430.0);
        assert_eq!(r.latency.p999_us, 9000.0);
        assert_eq!(r.socket_errors, 2);
    }

    #[test]
    fn no_rate_is_an_error() {
        assert!(parse("unable to connect to 127.0.0.1:1 Connection refused").is_err());
    }
}
