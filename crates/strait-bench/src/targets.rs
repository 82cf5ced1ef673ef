//! The performance targets (issue 7), checked against a comparison's [`Results`]: what each
//! asks, Strait's median ratio, in how many rounds it held, and the most this host's CPU
//! layout lets any gateway reach ([`crate::report`]'s model). BENCHMARKS.md opens with it, so
//! a run on any machine says at once which targets it met.

use std::fmt::Write as _;

use crate::compare::{HTTP_SECTION, MEMORY_PER_CONN, PACED_SECTION, Plan};
use crate::machine::Machine;
use crate::report::{ceiling, num};
use crate::results::{Results, Row};
use crate::stack::Side;

/// How long the target asks the idle connections to be held.
const IDLE_HOLD_ASKED: u64 = 60;

/// How Strait's figure must compare with the reference's.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Bound {
    /// Strait / reference at least this.
    AtLeast(f64),
    /// Strait / reference at most this.
    AtMost(f64),
}

impl Bound {
    fn holds(self, ratio: f64) -> bool {
        match self {
            Bound::AtLeast(x) => ratio >= x,
            Bound::AtMost(x) => ratio <= x,
        }
    }

    fn describe(self, against: Side) -> String {
        let (sign, x) = match self {
            Bound::AtLeast(x) => ("≥", x),
            Bound::AtMost(x) => ("≤", x),
        };
        format!("{sign} {x:.2}× {}", against.name())
    }

    /// `ratio` with two decimals, or three where two would round it onto the wrong side of
    /// the bound (0.996× is not "1.00×" against "≥ 1.00×").
    fn show(self, ratio: f64) -> String {
        let two = format!("{ratio:.2}");
        let misleads = two
            .parse::<f64>()
            .is_ok_and(|shown| self.holds(shown) != self.holds(ratio));
        if misleads {
            format!("{ratio:.3}×")
        } else {
            format!("{two}×")
        }
    }
}

/// One target: a row of the results, the side it is measured against, and its bound.
struct Target<'a> {
    row: &'a Row,
    against: Side,
    bound: Bound,
}

/// The targets the results hold rows for, in the order of the report's sections.
fn targets(results: &Results) -> Vec<Target<'_>> {
    use Bound::{AtLeast, AtMost};
    use Side::{Direct, Nginx};
    // (section prefix, metric prefix, against, bound)
    let wanted = [
        (HTTP_SECTION, "requests/s", Nginx, AtLeast(1.2)),
        (HTTP_SECTION, "latency p99 ", Nginx, AtMost(1.0)),
        // The same p99 target with both gateways at the same load.
        (PACED_SECTION, "latency p99 ", Nginx, AtMost(1.0)),
        ("WebSocket echo", "messages/s", Nginx, AtLeast(1.2)),
        ("WebSocket echo", "latency p99 ", Nginx, AtMost(1.0)),
        ("Idle WebSocket", MEMORY_PER_CONN, Nginx, AtMost(0.5)),
        ("WebSocket connection", "sessions/s", Nginx, AtLeast(1.0)),
        ("WebSocket stream", "echoed MB/s", Direct, AtLeast(0.9)),
    ];
    let mut out = Vec::new();
    for (section, metric, against, bound) in wanted {
        // Echo runs at several connection counts: a target for each.
        for row in results
            .rows
            .iter()
            .filter(|r| r.section.starts_with(section) && r.metric.starts_with(metric))
        {
            out.push(Target {
                row,
                against,
                bound,
            });
        }
    }
    // Each section's targets together (rate and p99 of one echo run), in the report's order.
    out.sort_by_key(|t| results.rows.iter().position(|r| r.section == t.row.section));
    out
}

/// In how many rounds `holds` was true of Strait's figure against `against`'s, of those where
/// both were measured (a round measures every side once, one after the other).
fn rounds(row: &Row, against: Side, holds: impl Fn(f64, f64) -> bool) -> (usize, usize) {
    let strait = row.of(Side::Strait);
    let other = row.of(against);
    let pairs: Vec<(f64, f64)> = strait
        .iter()
        .zip(other)
        .map(|(s, o)| (*s, *o))
        .filter(|(s, o)| s.is_finite() && o.is_finite())
        .collect();
    let met = pairs.iter().filter(|(s, o)| holds(*s, *o)).count();
    (met, pairs.len())
}

fn yes_no(met: bool) -> &'static str {
    if met { "yes" } else { "**no**" }
}

/// The "Targets" section.
pub fn write(w: &mut String, m: &Machine, plan: &Plan, results: &Results) {
    let _ = writeln!(w, "## Targets\n");
    let _ = writeln!(
        w,
        "Generated from this run: each target of the performance issue against the medians \
         below, in how many rounds it held (every round measures each side once, one after the \
         other), and its **ceiling** — the ratio a gateway that spent no CPU time in user space \
         would reach on this host's CPU layout, from the model under \"What bounds the ratios \
         on this host\". A target above its ceiling cannot be met on this host by any gateway.\n"
    );
    let _ = writeln!(
        w,
        "| target | asks | median | rounds met | ceiling here | met |\n|---|---|---:|---:|---:|---|"
    );
    let mut out_of_reach = false;
    for target in targets(results) {
        let row = target.row;
        let (Some(strait), Some(other)) = (row.median(Side::Strait), row.median(target.against))
        else {
            continue;
        };
        if other == 0.0 {
            continue;
        }
        let ratio = strait / other;
        let (met, of) = rounds(row, target.against, |s, o| {
            o != 0.0 && target.bound.holds(s / o)
        });
        let limit = match target.bound {
            Bound::AtLeast(asked) => ceiling(m, results, &row.section, target.against)
                .inspect(|c| out_of_reach |= *c < asked),
            Bound::AtMost(_) => None,
        };
        let _ = writeln!(
            w,
            "| {}: {} | {} | {} | {met} of {of} | {} | {} |",
            row.section,
            row.metric,
            target.bound.describe(target.against),
            target.bound.show(ratio),
            limit.map_or("—".into(), |c| format!("{c:.2}×")),
            yes_no(target.bound.holds(ratio)),
        );
    }
    // Every idle connection alive after the hold: a count, not a ratio.
    if let Some(row) = results.rows.iter().find(|r| {
        r.section.starts_with("Idle WebSocket") && r.metric.starts_with("connections alive")
    }) && let Some(alive) = row.median(Side::Strait)
    {
        let asked = plan.idle_conns as f64;
        let (met, of) = rounds(row, Side::Strait, |s, _| s >= asked);
        let hold = plan.idle_hold.as_secs();
        let _ = writeln!(
            w,
            "| {}: {}, held {hold} s | all {} | {} | {met} of {of} | — | {} |",
            row.section,
            row.metric,
            num(asked),
            num(alive),
            yes_no(met == of && of > 0 && hold >= IDLE_HOLD_ASKED),
        );
        if hold < IDLE_HOLD_ASKED {
            let _ = writeln!(
                w,
                "\nThe idle connections were held {hold} s; the target asks {IDLE_HOLD_ASKED} s."
            );
        }
    }
    if out_of_reach {
        let _ = writeln!(
            w,
            "\nWhere a ceiling is below what its target asks, no gateway could meet it on this \
             host: the CPU time of the load generator and the echo bounds the rate first. The \
             targets assume each role on CPUs of its own with room to spare (`--gateway-cpus`, \
             `--backend-cpus`, `--load-cpus` on a larger machine)."
        );
    }
    let _ = writeln!(w);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::Better;

    fn results() -> Results {
        let mut r = Results::default();
        let mut add = |section: &str, metric: &str, better: Better, rounds: [[f64; 3]; 3]| {
            for round in rounds {
                for (side, value) in Side::ALL.into_iter().zip(round) {
                    r.add(section, metric, better, side, value);
                }
            }
        };
        let http = "HTTP keep-alive GET (wrk -t1 -c64 -d5s)";
        // Strait over nginx by round: 1.25×, 1.1×, 1.3×; medians 52 over 40: met in 2 of 3.
        add(
            http,
            "requests/s",
            Better::Higher,
            [[90.0, 40.0, 50.0], [90.0, 50.0, 55.0], [90.0, 40.0, 52.0]],
        );
        add(
            http,
            "latency p99 (µs)",
            Better::Lower,
            [[1.0, 100.0, 90.0], [1.0, 100.0, 110.0], [1.0, 100.0, 95.0]],
        );
        // Not targets: p99.9, and the access-log row, which must not be taken for the HTTP one.
        add(
            http,
            "latency p99.9 (µs)",
            Better::Lower,
            [[1.0, 100.0, 200.0]; 3],
        );
        add(
            "HTTP keep-alive GET, access log on (wrk -t1 -c64 -d5s)",
            "requests/s",
            Better::Higher,
            [[f64::NAN, 1.0, 9.0]; 3],
        );
        // Both gateways at one rate: only the p99 is a target there.
        let paced = "HTTP keep-alive GET at the same load: 40 % of nginx's rate (oha -c64 -q16000 -z5s, open loop)";
        for (metric, better) in [
            ("requests/s", Better::Neither),
            ("latency p99 (µs)", Better::Lower),
        ] {
            add(
                paced,
                metric,
                better,
                [[1.0, 100.0, 104.0], [1.0, 100.0, 96.0], [1.0, 100.0, 99.0]],
            );
        }
        add(
            "WebSocket connection set-up, 32 concurrent clients",
            "sessions/s (connect + upgrade + close)",
            Better::Higher,
            [
                [20.0, 1000.0, 996.0],
                [20.0, 1000.0, 1010.0],
                [20.0, 1000.0, 990.0],
            ],
        );
        add(
            "Idle WebSocket connections, 200 held",
            "connections alive after the hold",
            Better::Higher,
            [
                [200.0, 200.0, 200.0],
                [200.0, 200.0, 199.0],
                [200.0, 200.0, 200.0],
            ],
        );
        r
    }

    fn row<'a>(text: &'a str, starts: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(starts))
            .unwrap_or_else(|| panic!("no row {starts:?} in {text}"))
    }

    #[test]
    fn each_target_shows_its_median_rounds_and_verdict() {
        let mut w = String::new();
        write(&mut w, &Machine::placeholder(), &Plan::quick(), &results());
        assert_eq!(
            row(&w, "| HTTP keep-alive GET (wrk -t1 -c64 -d5s): requests/s"),
            "| HTTP keep-alive GET (wrk -t1 -c64 -d5s): requests/s | ≥ 1.20× nginx | 1.30× | 2 of 3 | — | yes |"
        );
        assert_eq!(
            row(&w, "| HTTP keep-alive GET (wrk -t1 -c64 -d5s): latency p99"),
            "| HTTP keep-alive GET (wrk -t1 -c64 -d5s): latency p99 (µs) | ≤ 1.00× nginx | 0.95× | 2 of 3 | — | yes |"
        );
        assert_eq!(
            row(&w, "| HTTP keep-alive GET at the same load"),
            "| HTTP keep-alive GET at the same load: 40 % of nginx's rate (oha -c64 -q16000 -z5s, open loop): latency p99 (µs) | ≤ 1.00× nginx | 0.99× | 2 of 3 | — | yes |"
        );
        assert!(!w.contains("access log on") && !w.contains("p99.9"), "{w}");
        assert!(!w.contains("open loop): requests/s"), "{w}");
        // 996 / 1,000 would show as 1.00× against "≥ 1.00×": three decimals instead.
        assert_eq!(
            row(&w, "| WebSocket connection set-up"),
            "| WebSocket connection set-up, 32 concurrent clients: sessions/s (connect + upgrade + close) | ≥ 1.00× nginx | 0.996× | 1 of 3 | — | **no** |"
        );
        // One round lost a connection, and a quick run holds them 1 s, not 60.
        assert_eq!(
            row(&w, "| Idle WebSocket"),
            "| Idle WebSocket connections, 200 held: connections alive after the hold, held 1 s | all 200 | 200 | 2 of 3 | — | **no** |"
        );
        assert!(w.contains("held 1 s; the target asks 60 s"), "{w}");
        // No target without rows: no echo, stream or memory line.
        assert!(!w.contains("WebSocket echo"), "{w}");
    }

    #[test]
    fn a_ceiling_below_the_target_says_so() {
        use crate::compare::{LOAD_CPU, SERVER_KERNEL, SERVER_USER};
        let mut results = results();
        let http = "HTTP keep-alive GET (wrk -t1 -c64 -d5s)";
        let user = format!("{SERVER_USER} (µs per request)");
        let kernel = format!("{SERVER_KERNEL} (µs per request)");
        for (metric, figures) in [
            (user.as_str(), [3.0, 4.0, 8.0]),
            (kernel.as_str(), [7.0, 13.0, 13.0]),
            (LOAD_CPU, [90.0, 60.0, 60.0]),
        ] {
            for (side, value) in Side::ALL.into_iter().zip(figures) {
                results.add(http, metric, Better::Neither, side, value);
            }
        }
        let mut w = String::new();
        write(&mut w, &Machine::placeholder(), &Plan::full(), &results);
        let http_row = row(&w, "| HTTP keep-alive GET (wrk -t1 -c64 -d5s): requests/s");
        // L = 60 % / 52 per s, E = 10 µs: far above G, so the ceiling is near 1.
        assert!(http_row.contains("| 1.00× | yes |"), "{http_row}");
        assert!(w.contains("Where a ceiling is below"), "{w}");
    }
}
