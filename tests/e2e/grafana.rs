//! The Grafana dashboards in `dashboards/`: every panel's and variable's SQL, with Grafana's
//! macros and variables substituted, runs on the real ClickHouse over data profwatch stored
//! (events of two builds and a regression found by its analysis), and returns rows; with
//! variables that try to break out of their quotes, it returns none.

use profwatch_e2e::*;

/// `(where, sql)` for every query in a dashboard.
fn queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(sql) = t["rawSql"].as_str() {
                out.push((
                    format!("panel {:?}", p["title"].as_str().unwrap_or("?")),
                    sql.to_owned(),
                ));
            }
        }
    }
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if v["type"] == "query" {
            if let Some(sql) = v["query"].as_str() {
                out.push((
                    format!("variable {:?}", v["name"].as_str().unwrap_or("?")),
                    sql.to_owned(),
                ));
            }
        }
    }
    out
}

/// Grafana's `sqlstring` format of one value: quoted, each `'` doubled.
fn sqlstring(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// What Grafana would put in place of the macros and variables for the last six hours. Only
/// `${tenant:sqlstring}` and `${service:sqlstring}` are substituted: a variable spliced any
/// other way is left and fails the test.
fn substitute(sql: &str, now_s: i64, tenant: &str, service: &str) -> String {
    sql.replace("$__fromTime", &format!("toDateTime({})", now_s - 6 * 3600))
        .replace("$__toTime", &format!("toDateTime({})", now_s + 60))
        .replace("$__interval_s", "60")
        .replace("${tenant:sqlstring}", &sqlstring(tenant))
        .replace("${service:sqlstring}", &sqlstring(service))
}

#[test]
fn every_panel_query_runs_on_clickhouse_over_profwatch_data() {
    let Some(ch) = clickhouse_url() else { return };
    let art = artifacts("every_panel_query_runs_on_clickhouse_over_profwatch_data");
    let db = format!("pw_grafana_{}", std::process::id());
    let server = Server::start(
        &[
            "--clickhouse-url",
            &ch,
            "--clickhouse-database",
            &db,
            "--analysis-interval",
            "0s",
        ],
        &art.join("server.log"),
    );
    let c = server.client();
    for chunk in crate::regressions::workload().chunks(4000) {
        let r = c.post_events(protobuf(chunk), "application/x-protobuf", None);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = profwatch_e2e::http_client()
        .post(format!("{}/api/v1/analyze", c.base))
        .send()
        .expect("analyze");
    let pass: serde_json::Value = r.json().expect("json");
    assert_eq!(
        pass["new_regressions"], 1,
        "the seeded data holds one regression: {pass:#}"
    );

    let now_s = profwatch_model::timefmt::now_ns() / 1_000_000_000;
    let dir = repo_root().join("dashboards");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("dashboards/") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read"))
                .expect("dashboard JSON");
        let url = format!("{}/?database={db}", ch.trim_end_matches('/'));
        for (place, sql) in queries(&dashboard) {
            // Values that would break out of a quoted literal answer nothing and fail nothing.
            let hostile = substitute(&sql, now_s, "x' OR 1=1 OR 'a'='a", "shop' OR '1'='1");
            let out = clickhouse_query(&url, &format!("{hostile} FORMAT TSV"))
                .unwrap_or_else(|e| panic!("{place} with hostile values: {e}\n{hostile}"));
            if sql.contains("${tenant") {
                assert!(out.trim().is_empty(), "{place} leaked rows:\n{out}");
            }
            let sql = substitute(&sql, now_s, "default", "shop");
            assert!(
                !sql.contains('$'),
                "{}: {place}: a macro or variable is left: {sql}",
                path.display()
            );
            let out = clickhouse_query(&url, &format!("{sql} FORMAT TSV")).unwrap_or_else(|e| {
                panic!(
                    "{}: {place} fails on ClickHouse: {e}\n{sql}",
                    path.display()
                )
            });
            assert!(
                !out.trim().is_empty(),
                "{}: {place} returned no rows:\n{sql}",
                path.display()
            );
            if place.contains("by endpoint and build") {
                assert!(
                    out.contains("@ 1") && out.contains("@ 2"),
                    "both builds appear:\n{out}"
                );
            }
            if place.contains("Regressions") {
                assert!(
                    out.contains("GET /a") && out.contains("open"),
                    "the regression appears:\n{out}"
                );
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 5,
        "four panels and a variable at least, checked {checked}"
    );
    drop(server);
    let _ = clickhouse_query(&ch, &format!("DROP DATABASE IF EXISTS {db}"));
}
