//! What a run reports: one JSON object on stdout (one line, for scripts and for
//! appending to a results file) and the same figures as a table on stderr.
//!
//! Latencies are kept in HDR histograms of microseconds with three significant digits,
//! so percentiles are exact to 0.1 % whatever the spread.

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Map, Value};

/// Highest latency a histogram records, µs (one hour); larger values are clamped.
const HIGHEST_US: u64 = 3_600_000_000;

/// An empty latency histogram, in microseconds.
pub fn histogram() -> Histogram<u64> {
    // Constant, valid bounds (1 ≤ low, high ≥ 2 × low, sigfig ≤ 5): cannot fail.
    Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("valid histogram bounds")
}

/// Percentiles of one histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }

    /// One table cell: `p50 1.20 · p90 … · max 9.80 ms (n=…)`.
    pub fn cell(&self) -> String {
        if self.count == 0 {
            return "no samples".into();
        }
        format!(
            "p50 {:.2} · p90 {:.2} · p99 {:.2} · p99.9 {:.2} · max {:.2} ms (n={})",
            self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms, self.max_ms, self.count
        )
    }
}

/// The median of `values`; `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// A run's figures, collected as the mode computes them.
pub struct Report {
    json: Map<String, Value>,
    rows: Vec<(String, String)>,
}

impl Report {
    pub fn new(mode: &str) -> Self {
        let mut json = Map::new();
        json.insert("mode".into(), mode.into());
        json.insert("date".into(), chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true).into());
        Report { json, rows: vec![("mode".into(), mode.into())] }
    }

    /// A JSON field (not shown in the table).
    pub fn field(&mut self, key: &str, value: impl Serialize) -> &mut Self {
        // Plain structs, numbers and strings: serialising them to a `Value` cannot fail.
        self.json.insert(key.into(), serde_json::to_value(value).expect("report values serialise"));
        self
    }

    /// A JSON field set earlier, by its path of keys (`["latency", "p99_ms"]`).
    pub fn number(&self, path: &[&str]) -> Option<f64> {
        let (first, rest) = path.split_first()?;
        rest.iter().try_fold(self.json.get(*first)?, |v, key| v.get(key))?.as_f64()
    }

    /// A table row (not in the JSON).
    pub fn row(&mut self, label: &str, value: impl Into<String>) -> &mut Self {
        self.rows.push((label.into(), value.into()));
        self
    }

    /// Prints the JSON line on stdout and the table on stderr.
    pub fn emit(&self) {
        let width = self.rows.iter().map(|(l, _)| l.chars().count()).max().unwrap_or(0);
        for (label, value) in &self.rows {
            eprintln!("  {label:<width$}  {value}");
        }
        println!("{}", Value::Object(self.json.clone()));
    }
}

/// `12345678.9` → `12 345 679`: the table's thousands separator.
pub fn grouped(value: f64) -> String {
    let digits = format!("{:.0}", value.abs());
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    if value < 0.0 { format!("-{out}") } else { out }
}

/// Bytes as KiB or MiB for the table.
pub fn bytes(value: f64) -> String {
    if value.abs() >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", value / (1024.0 * 1024.0))
    } else {
        format!("{:.1} KiB", value / 1024.0)
    }
}

/// The harness's own CPU and peak memory, so a reader can see what the load generator
/// took from the shared machine.
pub fn client_usage(r: &mut Report) {
    if let Ok(me) = crate::procfs::Proc::me().usage() {
        r.field("client_cpu_s", me.cpu_secs).field("client_peak_rss_bytes", me.peak_rss_bytes);
        r.row("harness", format!("CPU {:.2} s, peak RSS {}", me.cpu_secs, bytes(me.peak_rss_bytes as f64)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_even_and_empty_lists() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(grouped(1_234_567.4), "1 234 567");
        assert_eq!(grouped(999.0), "999");
        assert_eq!(grouped(-1000.0), "-1 000");
    }

    #[test]
    fn percentiles_come_out_in_milliseconds() {
        let mut h = histogram();
        for us in 1..=1000 {
            h.record(us * 1000).unwrap();
        }
        let l = Latency::of(&h);
        assert_eq!(l.count, 1000);
        assert!((l.p50_ms - 500.0).abs() < 1.0, "{l:?}");
        assert!((l.max_ms - 1000.0).abs() < 1.0, "{l:?}");
    }
}
