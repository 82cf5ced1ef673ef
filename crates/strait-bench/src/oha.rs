//! HTTP load at a fixed rate comes from `oha` (crates.io): an open loop, each request sent when
//! it is due and timed from then (`--latency-correction`), so a gateway that falls behind shows
//! it as latency rather than as a lower rate. This module parses its `--output-format json`.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::latency::Percentiles;

/// What oha calls the requests still in flight when its duration ends: cut off by the load
/// generator, not failed by the server.
const CUT_AT_DEADLINE: &str = "aborted due to deadline";

#[derive(Clone, Debug, Default, PartialEq)]
pub struct OhaReport {
    pub requests_per_sec: f64,
    pub latency: Percentiles,
    /// Responses with a status other than 2xx or 3xx, and requests that failed (connect,
    /// read or write errors), those cut off at the deadline excepted.
    pub errors: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Json {
    summary: Summary,
    latency_percentiles: BTreeMap<String, Option<f64>>,
    #[serde(default)]
    status_code_distribution: BTreeMap<String, u64>,
    #[serde(default)]
    error_distribution: BTreeMap<String, u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    requests_per_sec: Option<f64>,
    slowest: Option<f64>,
}

/// Parses oha's JSON output (times in seconds).
pub fn parse(output: &str) -> Result<OhaReport> {
    let json: Json = serde_json::from_str(output)
        .with_context(|| format!("oha's output is not its JSON report:\n{output}"))?;
    let us = |seconds: Option<f64>| seconds.unwrap_or(f64::NAN) * 1e6;
    let percentile = |key: &str| us(json.latency_percentiles.get(key).copied().flatten());
    let failed_statuses = json
        .status_code_distribution
        .iter()
        .filter(|(code, _)| !code.starts_with('2') && !code.starts_with('3'))
        .map(|(_, n)| n)
        .sum::<u64>();
    let failed_requests = json
        .error_distribution
        .iter()
        .filter(|(what, _)| what.as_str() != CUT_AT_DEADLINE)
        .map(|(_, n)| n)
        .sum::<u64>();
    Ok(OhaReport {
        requests_per_sec: json
            .summary
            .requests_per_sec
            .context("oha's report has no requestsPerSec")?,
        latency: Percentiles {
            p50_us: percentile("p50"),
            p99_us: percentile("p99"),
            p999_us: percentile("p99.9"),
            max_us: us(json.summary.slowest),
        },
        errors: failed_statuses + failed_requests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parts of oha 1.16.0's report this module reads, as it printed them for a run.
    fn report(statuses: &str, errors: &str) -> String {
        format!(
            r#"{{
  "summary": {{ "successRate": 1.0, "total": 2.002196295, "slowest": 0.001967893,
    "fastest": 0.000040109, "average": 0.00017881771671501408,
    "requestsPerSec": 4994.515285525488, "totalData": 1919424, "sizePerRequest": 192 }},
  "latencyPercentiles": {{ "p10": 0.000097435, "p50": 0.000164193, "p99": 0.0004383,
    "p99.9": 0.001191015, "p99.99": 0.001967893 }},
  "statusCodeDistribution": {{ {statuses} }},
  "errorDistribution": {{ {errors} }}
}}"#
        )
    }

    #[test]
    fn reads_rate_and_percentiles_in_microseconds() {
        let r = parse(&report(r#""200": 9997"#, "")).expect("parses");
        assert_eq!(r.requests_per_sec, 4994.515285525488);
        assert!((r.latency.p50_us - 164.193).abs() < 1e-6, "{r:?}");
        assert!((r.latency.p99_us - 438.3).abs() < 1e-6, "{r:?}");
        assert!((r.latency.p999_us - 1191.015).abs() < 1e-6, "{r:?}");
        assert!((r.latency.max_us - 1967.893).abs() < 1e-6, "{r:?}");
        assert_eq!(r.errors, 0);
    }

    #[test]
    fn requests_cut_at_the_deadline_are_not_errors_but_failures_are() {
        let cut = format!(r#""{CUT_AT_DEADLINE}": 3"#);
        let r = parse(&report(r#""200": 9997"#, &cut)).expect("parses");
        assert_eq!(r.errors, 0);
        let failed =
            format!(r#""{CUT_AT_DEADLINE}": 3, "connection closed before message completed": 2"#);
        let r = parse(&report(
            r#""200": 90, "304": 1, "404": 4, "502": 5"#,
            &failed,
        ))
        .expect("parses");
        assert_eq!(r.errors, 4 + 5 + 2);
    }

    #[test]
    fn a_run_without_responses_has_no_percentiles_to_compare() {
        // As oha printed it with nothing listening: every time null, every request an error.
        let text = r#"{"summary": {"successRate": 0.0, "slowest": null, "requestsPerSec": 99.86},
            "latencyPercentiles": {"p50": null, "p99": null, "p99.9": null},
            "statusCodeDistribution": {},
            "errorDistribution": {"Connection refused (os error 111)": 100}}"#;
        let r = parse(text).expect("parses");
        assert!(
            r.latency.p99_us.is_nan() && r.latency.max_us.is_nan(),
            "{r:?}"
        );
        assert_eq!(r.errors, 100);
    }

    #[test]
    fn text_output_is_an_error() {
        assert!(parse("Summary:\n  Success rate: 100.00%\n").is_err());
    }
}
