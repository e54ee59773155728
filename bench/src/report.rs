//! The results table: one row per measurement, one column per runtime, and the ratio of the
//! first runtime to the second (skiff / containerd).

use crate::stats::Summary;
use std::fmt::Write;

/// The unit a row's samples are in, and how to print them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Millis,
    Seconds,
    MiB,
    Count,
}

impl Unit {
    fn suffix(self) -> &'static str {
        match self {
            Unit::Millis => "ms",
            Unit::Seconds => "s",
            Unit::MiB => "MiB",
            Unit::Count => "",
        }
    }

    fn format(self, value: f64) -> String {
        match self {
            Unit::Millis if value < 10.0 => format!("{value:.2}"),
            Unit::Millis => format!("{value:.1}"),
            Unit::Seconds | Unit::MiB => format!("{value:.2}"),
            Unit::Count => format!("{value:.0}"),
        }
    }
}

/// One measurement: samples per runtime, in the order of [`Report::targets`].
#[derive(Clone, Debug)]
pub struct Row {
    pub name: String,
    pub unit: Unit,
    /// The target for the ratio of medians, if it sets one (e.g. `0.1`).
    pub goal: Option<f64>,
    pub samples: Vec<Vec<f64>>,
}

/// Rows in the order they were measured.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub targets: Vec<String>,
    pub rows: Vec<Row>,
}

impl Report {
    pub fn new(targets: Vec<String>) -> Report {
        Report {
            targets,
            rows: Vec::new(),
        }
    }

    /// Appends `value` to row `name` for runtime number `target`, creating the row.
    pub fn add(&mut self, name: &str, unit: Unit, goal: Option<f64>, target: usize, value: f64) {
        let width = self.targets.len();
        let row = match self.rows.iter().position(|r| r.name == name) {
            Some(i) => &mut self.rows[i],
            None => {
                self.rows.push(Row {
                    name: name.into(),
                    unit,
                    goal,
                    samples: vec![Vec::new(); width],
                });
                self.rows.last_mut().expect("just pushed")
            }
        };
        row.samples[target].push(value);
    }

    /// A Markdown table: `min / median / p90 / max` per runtime (a single value when there is
    /// one sample), then the ratio of the medians of the first two runtimes and its goal.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let ratio = self.targets.len() >= 2;
        let _ = write!(out, "| measurement |");
        for t in &self.targets {
            let _ = write!(out, " {t} |");
        }
        if ratio {
            let _ = write!(
                out,
                " {}/{} (median) | goal |",
                self.targets[0], self.targets[1]
            );
        }
        out.push('\n');
        let columns = 1 + self.targets.len() + if ratio { 2 } else { 0 };
        out.push('|');
        out.push_str(&"---|".repeat(columns));
        out.push('\n');
        for row in &self.rows {
            let summaries: Vec<Option<Summary>> =
                row.samples.iter().map(|s| Summary::of(s)).collect();
            let unit = row.unit.suffix();
            let count = summaries.iter().flatten().map(|s| s.count).max();
            let n = match count {
                Some(n) if n > 1 => format!(", n={n}"),
                _ => String::new(),
            };
            let label = if unit.is_empty() {
                format!("{}{n}", row.name)
            } else {
                format!("{} ({unit}{n})", row.name)
            };
            let _ = write!(out, "| {label} |");
            for summary in &summaries {
                let cell = match summary {
                    None => "—".to_string(),
                    Some(s) if s.count == 1 => row.unit.format(s.median),
                    Some(s) => format!(
                        "{} / **{}** / {} / {}",
                        row.unit.format(s.min),
                        row.unit.format(s.median),
                        row.unit.format(s.p90),
                        row.unit.format(s.max)
                    ),
                };
                let _ = write!(out, " {cell} |");
            }
            if ratio {
                let value = match (summaries[0], summaries[1]) {
                    (Some(a), Some(b)) if b.median > 0.0 => Some(a.median / b.median),
                    _ => None,
                };
                let cell = value.map_or("—".to_string(), |v| format!("{v:.2}"));
                let goal = match (row.goal, value) {
                    (Some(g), Some(v)) if v <= g => format!("≤ {g} ✓"),
                    (Some(g), Some(_)) => format!("≤ {g} ✗"),
                    (Some(g), None) => format!("≤ {g}"),
                    (None, _) => String::new(),
                };
                let _ = write!(out, " {cell} | {goal} |");
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_ratio_and_goal() {
        let mut report = Report::new(vec!["skiff".into(), "containerd".into()]);
        for v in [10.0, 12.0] {
            report.add("RunPodSandbox", Unit::Millis, Some(0.1), 0, v);
        }
        for v in [100.0, 110.0] {
            report.add("RunPodSandbox", Unit::Millis, Some(0.1), 1, v);
        }
        report.add("memory per pod", Unit::MiB, None, 0, 1.5);
        let table = report.markdown();
        assert!(table.contains("| RunPodSandbox (ms, n=2) | 10.0 / **10.0** / 12.0 / 12.0 |"));
        assert!(table.contains("| 0.10 | ≤ 0.1 ✓ |"), "{table}");
        assert!(
            table.contains("| memory per pod (MiB) | 1.50 | — | — |  |"),
            "{table}"
        );
    }
}
