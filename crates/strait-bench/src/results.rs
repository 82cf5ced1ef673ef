//! Every figure of a comparison: one [`Row`] per section and metric, with one value per round
//! for each side, and the notes (first errors) the load generators reported.

use crate::latency::Percentiles;
use crate::stack::Side;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
    /// Context, not a score: no ratio, never "falls short".
    Neither,
}

/// One figure, measured for each side in each round.
#[derive(Clone, Debug)]
pub struct Row {
    pub section: String,
    pub metric: String,
    pub better: Better,
    /// Indexed by [`Side::index`]; one value per round.
    pub values: [Vec<f64>; 3],
}

impl Row {
    pub fn median(&self, side: Side) -> Option<f64> {
        median(self.of(side))
    }

    /// One value per round of `side`.
    pub fn of(&self, side: Side) -> &[f64] {
        self.values.get(side.index()).map_or(&[], Vec::as_slice)
    }

    fn push(&mut self, side: Side, value: f64) {
        if let Some(values) = self.values.get_mut(side.index()) {
            values.push(value);
        }
    }
}

#[derive(Default)]
pub struct Results {
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
    /// The admin API timed while Strait held the idle connections, one probe per round.
    pub registry: Vec<crate::registry::Probe>,
    /// How long all measurements took.
    pub took: std::time::Duration,
}

impl Results {
    pub fn add(&mut self, section: &str, metric: &str, better: Better, side: Side, value: f64) {
        if let Some(row) = self
            .rows
            .iter_mut()
            .find(|r| r.section == section && r.metric == metric)
        {
            row.push(side, value);
        } else {
            let mut row = Row {
                section: section.to_owned(),
                metric: metric.to_owned(),
                better,
                values: Default::default(),
            };
            row.push(side, value);
            self.rows.push(row);
        }
    }

    /// p50, p99 and p99.9 in microseconds.
    pub fn latency(&mut self, section: &str, side: Side, p: &Percentiles) {
        self.add(section, "latency p50 (µs)", Better::Lower, side, p.p50_us);
        self.add(section, "latency p99 (µs)", Better::Lower, side, p.p99_us);
        self.add(
            section,
            "latency p99.9 (µs)",
            Better::Lower,
            side,
            p.p999_us,
        );
    }

    /// Records a load generator's first error, if any.
    pub fn error(&mut self, section: &str, side: Side, error: Option<&str>) {
        if let Some(error) = error {
            self.note(format!("{section}, {}: {error}", side.name()));
        }
    }

    pub fn note(&mut self, note: String) {
        if !self.notes.contains(&note) && self.notes.len() < 50 {
            self.notes.push(note);
        }
    }

    /// The row whose section starts with `section` and whose metric is `metric`.
    pub fn find(&self, section: &str, metric: &str) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.section.starts_with(section) && r.metric == metric)
    }
}

/// Median of the finite values (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    let upper = *v.get(mid)?;
    Some(if v.len() % 2 == 1 {
        upper
    } else {
        (v.get(mid - 1)? + upper) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN]), None);
    }
}
