use std::io::Write as _;

use super::*;

struct TempCsv(PathBuf);

impl TempCsv {
    fn new(name: &str, content: &str) -> TempCsv {
        let path = std::env::temp_dir().join(format!(
            "profwatch-analyzer-{}-{name}.csv",
            std::process::id()
        ));
        let mut f = std::fs::File::create(&path).expect("create temp csv");
        f.write_all(content.as_bytes()).expect("write temp csv");
        TempCsv(path)
    }
}

impl Drop for TempCsv {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn args(path: &TempCsv, column: &str) -> ChangepointsArgs {
    ChangepointsArgs {
        csv: path.0.clone(),
        column: column.to_owned(),
        time_column: None,
        build_column: None,
        format: OutputFormat::Json,
        config: ChangepointConfig::default(),
    }
}

fn step_csv() -> String {
    let mut s = String::from("time,build,ms\n");
    for i in 0..40 {
        let level = if i < 20 { 100.0 } else { 120.0 };
        let jitter = [0.3, -0.2, 0.1, -0.4, 0.2][i % 5];
        s += &format!("{},v{},{}\n", 1_700_000_000 + i * 60, i / 2, level + jitter);
    }
    s
}

#[test]
fn json_output_has_the_documented_fields() {
    let f = TempCsv::new("json", &step_csv());
    let mut a = args(&f, "ms");
    a.time_column = Some("time".to_owned());
    let out = run_changepoints(&a).expect("runs");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let arr = v["changes"].as_array().expect("array");
    assert!(v["drift"].is_null(), "{out}");
    assert!(v["seasonality"].is_null(), "{out}");
    assert!(v["autocorrelation"].is_number(), "{out}");
    assert_eq!(arr.len(), 1, "{out}");
    let c = &arr[0];
    assert_eq!(c["index"], 20);
    assert_eq!(c["time"], 1_700_000_000 + 20 * 60);
    assert!(c["build"].is_null());
    assert!((c["change_pct"].as_f64().unwrap_or(0.0) - 20.0).abs() < 1.0);
    for key in ["before", "after", "p_value"] {
        assert!(c[key].is_number(), "{key}");
    }
}

#[test]
fn build_column_and_table_format() {
    let f = TempCsv::new("table", &step_csv());
    let mut a = args(&f, "ms");
    a.build_column = Some("build".to_owned());
    a.format = OutputFormat::Table;
    let out = run_changepoints(&a).expect("runs");
    assert!(out.starts_with("index"), "{out}");
    assert!(out.contains("v10"), "{out}");
    assert!(out.contains("+20."), "{out}");
}

#[test]
fn bad_input_gets_a_clear_error() {
    let missing = args(&TempCsv::new("unused", "a\n1\n"), "a");
    let mut gone = missing.clone();
    gone.csv = PathBuf::from("/nonexistent/profwatch/series.csv");
    assert!(matches!(
        run_changepoints(&gone),
        Err(AnalyzerError::Io { .. })
    ));

    let empty = TempCsv::new("empty", "");
    assert!(matches!(
        run_changepoints(&args(&empty, "ms")),
        Err(AnalyzerError::EmptyFile { .. })
    ));

    let f = TempCsv::new("cols", &step_csv());
    let err = run_changepoints(&args(&f, "latency")).expect_err("missing column");
    assert!(err.to_string().contains("time, build, ms"), "{err}");

    let text = TempCsv::new("text", "ms\n1\n2\nabc\n");
    let err = run_changepoints(&args(&text, "ms")).expect_err("text");
    assert!(
        matches!(err, AnalyzerError::NotANumber { line: 4, .. }),
        "{err}"
    );

    let nan = TempCsv::new("nan", "ms\n1\nNaN\n");
    assert!(matches!(
        run_changepoints(&args(&nan, "ms")),
        Err(AnalyzerError::NotFinite { line: 3, .. })
    ));

    let one = TempCsv::new("one", "ms\n1\n");
    let err = run_changepoints(&args(&one, "ms")).expect_err("one row");
    assert!(
        matches!(err, AnalyzerError::TooFewRows { rows: 1, .. }),
        "{err}"
    );

    let ragged = TempCsv::new("ragged", "a,ms\n1,2\n3\n");
    assert!(matches!(
        run_changepoints(&args(&ragged, "ms")),
        Err(AnalyzerError::RaggedRow { line: 3, .. })
    ));
    assert!("xml".parse::<OutputFormat>().is_err());
}

#[test]
fn no_changes_in_a_flat_series() {
    let mut s = String::from("ms\n");
    for i in 0..30 {
        s += &format!("{}\n", 50.0 + (i % 3) as f64 * 0.1);
    }
    let f = TempCsv::new("flat", &s);
    let out = run_changepoints(&args(&f, "ms")).expect("runs");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["changes"], serde_json::json!([]), "{out}");
    assert!(v["drift"].is_null(), "{out}");
    let mut t = args(&f, "ms");
    t.format = OutputFormat::Table;
    let table = run_changepoints(&t).expect("runs");
    assert!(table.starts_with("no change points\n"), "{table}");
    assert!(table.contains("autocorrelation"), "{table}");
}

/// A steady climb is one drift, printed with its slope and the times it spans, and no change.
#[test]
fn a_trend_is_printed_as_a_drift() {
    let mut s = String::from("time,ms\n");
    for i in 0..200 {
        let jitter = [0.3, -0.2, 0.1, -0.4, 0.2, 0.0, -0.1][i % 7];
        s += &format!(
            "{},{}\n",
            1_700_000_000 + i * 3600,
            100.0 * (1.0 + 0.003 * i as f64) + jitter
        );
    }
    let f = TempCsv::new("drift", &s);
    let mut a = args(&f, "ms");
    a.time_column = Some("time".to_owned());
    let out = run_changepoints(&a).expect("runs");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["changes"], serde_json::json!([]), "{out}");
    let d = &v["drift"];
    assert_eq!(d["start"], 0, "{out}");
    assert_eq!(d["end"], 199, "{out}");
    assert_eq!(d["end_time"], 1_700_000_000 + 199 * 3600, "{out}");
    let total = d["total_pct"].as_f64().unwrap_or(0.0);
    assert!((total - 59.7).abs() < 2.0, "{out}");
    let (low, high) = (
        d["slope_low_pct"].as_f64().unwrap_or(1.0),
        d["slope_high_pct"].as_f64().unwrap_or(0.0),
    );
    assert!(low < high && low > 0.2 && high < 0.3, "{out}");
    a.format = OutputFormat::Table;
    let table = run_changepoints(&a).expect("runs");
    assert!(table.contains("drift: +0.2"), "{table}");
    assert!(table.contains("from row 0 to row 199"), "{table}");
}

#[test]
fn times_in_any_unit_or_rfc3339_become_seconds() {
    let secs = |v: &[&str]| unix_seconds(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(
        secs(&["1700000000", "1700000060"]),
        Some(vec![1.7e9, 1.70000006e9])
    );
    assert_eq!(secs(&["1700000000000"]), Some(vec![1.7e9]));
    assert_eq!(secs(&["1700000000000000000"]), Some(vec![1.7e9]));
    assert_eq!(secs(&["2023-11-14T22:13:20Z"]), Some(vec![1.7e9]));
    assert_eq!(secs(&["1700000000", "yesterday"]), None);
}
