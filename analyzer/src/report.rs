//! The per-endpoint table of a snapshot compare, as `profwatch compare` prints it.

use std::fmt::Write as _;

use crate::compare::{Comparison, Verdict};

fn pct(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "-".to_owned(), |r| format!("{:+.2}%", (r - 1.0) * 100.0))
}

fn verdict(v: Verdict) -> &'static str {
    match v {
        Verdict::Regression => "REGRESSION",
        Verdict::Improvement => "improvement",
        Verdict::Same => "same",
        Verdict::NotEnoughData => "not enough data",
    }
}

/// An aligned table: endpoint, metric, requests per arm, effect with interval, q-value, verdict.
pub fn table(comparisons: &[Comparison]) -> String {
    let rows: Vec<[String; 7]> = comparisons
        .iter()
        .map(|c| {
            [
                c.endpoint.clone(),
                c.metric.name().to_owned(),
                format!("{}/{}", c.n_baseline, c.n_candidate),
                pct(c.effect),
                c.ci.map_or_else(
                    || "-".to_owned(),
                    |i| format!("[{}, {}]", pct(Some(i.low)), pct(Some(i.high))),
                ),
                c.q_value
                    .map_or_else(|| "-".to_owned(), |q| format!("{q:.4}")),
                verdict(c.verdict).to_owned(),
            ]
        })
        .collect();
    let header = [
        "endpoint",
        "metric",
        "requests",
        "change",
        "95% interval",
        "q",
        "verdict",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: &[&str], out: &mut String| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", parts.join("  ").trim_end());
    };
    line(&header, &mut out);
    for r in &rows {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        line(&cells, &mut out);
    }
    out
}
