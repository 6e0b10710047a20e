//! The Memory page in a real headless Chromium: memory samples of two builds posted through
//! `POST /api/v1/memory` to a server on the embedded store; the page, reached by the overview's
//! link, shows each build's private and shared memory per worker, the workers that fit on a
//! host for both builds and the change between them, all as computed here from the samples
//! posted; a new host memory recomputes them and stays in the URL; a service without samples
//! says how to turn on the sidecar's memory watch.

use profwatch_e2e::webdriver::Browser;
use profwatch_e2e::*;
use serde_json::{json, Value};

use super::{event, no_errors, open, text_of, WAIT};

const SERVICE: &str = "memshop";
const MIB: u64 = 1 << 20;
const GIB: f64 = (1u64 << 30) as f64;

/// One worker: (host, pid) and, per sample, (private, shared) bytes.
type Worker = ((&'static str, u32), [(u64, u64); 3]);

/// One build's workers.
struct Build {
    name: &'static str,
    /// Minutes before now of its samples.
    ago_min: [i64; 3],
    workers: Vec<Worker>,
}

/// Build 7 (older): ~300 MiB private, ~900 MiB shared per worker; build 8: ~350 MiB private,
/// ~700 MiB shared (large enough that leaving the shared part out, or counting it per worker,
/// changes every workers-per-host figure checked). Each worker's samples differ, and so do the
/// workers.
fn builds() -> [Build; 2] {
    let kib = 1024;
    let b7 = Build {
        name: "7",
        ago_min: [50, 40, 30],
        workers: vec![
            (
                ("h1", 101),
                [
                    (290 * MIB, 900 * MIB),
                    (296 * MIB, 901 * MIB),
                    (301 * MIB, 899 * MIB),
                ],
            ),
            (
                ("h1", 102),
                [
                    (305 * MIB + 300 * kib, 898 * MIB),
                    (309 * MIB, 902 * MIB),
                    (300 * MIB, 900 * MIB),
                ],
            ),
            (
                ("h2", 101),
                [
                    (298 * MIB, 897 * MIB + 77 * kib),
                    (302 * MIB, 903 * MIB),
                    (299 * MIB, 901 * MIB),
                ],
            ),
        ],
    };
    let b8 = Build {
        name: "8",
        ago_min: [20, 12, 4],
        workers: vec![
            (
                ("h1", 201),
                [
                    (344 * MIB, 699 * MIB),
                    (351 * MIB + 700 * kib, 701 * MIB),
                    (356 * MIB, 700 * MIB),
                ],
            ),
            (
                ("h2", 202),
                [
                    (349 * MIB, 698 * MIB),
                    (347 * MIB, 702 * MIB + 13 * kib),
                    (353 * MIB, 700 * MIB),
                ],
            ),
        ],
    };
    [b7, b8]
}

/// The API's figure for a build: each worker's mean over its samples, then the mean of those.
fn per_worker(b: &Build, part: impl Fn(&(u64, u64)) -> u64) -> f64 {
    let means: Vec<f64> = b
        .workers
        .iter()
        .map(|(_, s)| s.iter().map(|x| part(x) as f64).sum::<f64>() / s.len() as f64)
        .collect();
    means.iter().sum::<f64>() / means.len() as f64
}

fn samples(b: &Build, now_ns: i64) -> Vec<Value> {
    let mut out = Vec::new();
    for ((host, pid), per) in &b.workers {
        for (i, (private, shared)) in per.iter().enumerate() {
            let (pc, pd) = (private / 4, private - private / 4);
            let (sc, sd) = (shared / 2, shared - shared / 2);
            out.push(json!({
                "ts": now_ns - b.ago_min[i] * 60_000_000_000, "service": SERVICE, "build": b.name,
                "dc": "eu1", "host": host, "pid": pid,
                "bytes": {"rss": private + shared, "pss": private + shared / 3,
                    "shared_clean": sc, "shared_dirty": sd, "private_clean": pc,
                    "private_dirty": pd, "swap": 0},
            }));
        }
    }
    out
}

/// `fmtBytes` of format.js.
fn fmt_bytes(n: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut v, mut i) = (n, 0);
    while v.abs() >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    let digits = if i == 0 || v.abs() >= 100.0 { 0 } else { 1 };
    format!("{v:.digits$} {}", units[i])
}

/// `fmtPct` of format.js.
fn fmt_pct(ratio: f64) -> String {
    let v = ratio * 100.0;
    format!("{}{v:.1}%", if v > 0.0 { "+" } else { "" })
}

fn workers_per_host(host_gib: f64, private: f64, shared: f64) -> i64 {
    ((host_gib * GIB - shared) / private).floor().max(0.0) as i64
}

/// What the page must show for one build at a host size.
struct Expected {
    build: &'static str,
    private: f64,
    shared: f64,
}

/// The builds table's rows: build, private and shared text, private and shared bytes (data
/// attributes) and workers per host.
fn table_rows(b: &Browser) -> Vec<Value> {
    let v = b.js(
        "return Array.from(document.querySelectorAll('table.memory-builds tbody tr')).map(r => [
           r.cells[0].textContent,
           r.querySelector('[data-private]').textContent, r.querySelector('[data-shared]').textContent,
           Number(r.querySelector('[data-private]').dataset.private),
           Number(r.querySelector('[data-shared]').dataset.shared),
           r.querySelector('[data-fit]').textContent])",
        json!([]),
    );
    v.as_array().cloned().unwrap_or_default()
}

/// Checks the table and the headline against the samples for a host of `gib` GiB.
fn check_figures(b: &Browser, exp: &[Expected; 2], gib: f64) {
    let rows = table_rows(b);
    assert_eq!(rows.len(), 2, "one row per build: {rows:?}");
    for (row, e) in rows.iter().zip(exp) {
        assert_eq!(row[0], e.build, "builds in rollout order: {rows:?}");
        assert_eq!(
            row[1],
            fmt_bytes(e.private).as_str(),
            "build {} private: {rows:?}",
            e.build
        );
        assert_eq!(
            row[2],
            fmt_bytes(e.shared).as_str(),
            "build {} shared: {rows:?}",
            e.build
        );
        let (p, s) = (
            row[3].as_f64().expect("private"),
            row[4].as_f64().expect("shared"),
        );
        assert!(
            (p - e.private).abs() < 1.0,
            "build {} private {p}, expected {}",
            e.build,
            e.private
        );
        assert!(
            (s - e.shared).abs() < 1.0,
            "build {} shared {s}, expected {}",
            e.build,
            e.shared
        );
        let fit = workers_per_host(gib, e.private, e.shared);
        assert_eq!(
            row[5],
            fit.to_string().as_str(),
            "build {} at {gib} GiB: {rows:?}",
            e.build
        );
    }
    let before = workers_per_host(gib, exp[0].private, exp[0].shared);
    let after = workers_per_host(gib, exp[1].private, exp[1].shared);
    let headline = text_of(b, "#fit-change");
    let want = format!(
        "{before} → {after} workers per host ({}) with build 8",
        fmt_pct(after as f64 / before as f64 - 1.0)
    );
    assert!(
        headline.starts_with(&want),
        "{headline:?}, expected {want:?}"
    );
    assert!(text_of(b, "#fit h2").contains(&format!("({gib} GiB)")));
}

#[test]
fn the_memory_page_shows_workers_per_host_by_build() {
    let art = artifacts("ui_memory");
    let browser = Browser::start(1400, 1000);
    let data = art.join("data");
    let server = Server::start(
        &["--data-dir", data.to_str().expect("utf-8")],
        &art.join("server.log"),
    );
    let c = server.client();
    let now = profwatch_model::timefmt::now_ns();
    let builds = builds();
    let mut all = Vec::new();
    for b in &builds {
        all.extend(samples(b, now));
    }
    let r = c.request(
        "POST",
        "/api/v1/memory",
        &[("content-type", "application/json")],
        json!({ "samples": all }).to_string().into_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // A few requests, so the overview lists the service (with its link to the Memory page).
    let evs: Vec<_> = (0..20)
        .map(|i| {
            event(
                now - (10 + i) * 60_000_000_000,
                SERVICE,
                "GET /m",
                "8",
                1,
                1e6,
                None,
            )
        })
        .collect();
    let r = c.post_events(protobuf(&evs), "application/x-protobuf", None);
    assert_eq!(r.status, 200, "{}", r.body);

    let exp = builds.map(|b| Expected {
        build: b.name,
        private: per_worker(&b, |x| x.0),
        shared: per_worker(&b, |x| x.1),
    });
    // The expectations are the API's answer (so a failure below is the page's).
    let api = c
        .get(&format!("/api/v1/memory?service={SERVICE}&group_by=build"))
        .json();
    for (row, e) in api.as_array().expect("rows").iter().zip(&exp) {
        assert_eq!(row["group"], e.build, "{api}");
        let p = row["private_bytes"].as_f64().expect("private");
        assert!((p - e.private).abs() < 1.0, "{api}");
    }

    // ---- from the overview's link, at the default 16 GiB
    let base = c.base.clone();
    open(&browser, &format!("{base}/"));
    let link = browser.find(
        &format!("section[data-service={SERVICE}] a[href^='#/memory']"),
        WAIT,
    );
    browser.click(&link);
    browser.wait_for(
        "the memory page",
        "const m = document.getElementById('main'); return m.dataset.page === 'memory' && m.dataset.state !== 'loading'",
        WAIT,
    );
    assert_eq!(
        browser.js(
            "return document.getElementById('main').dataset.state",
            json!([])
        ),
        "ready",
        "{}",
        text_of(&browser, "#main")
    );
    assert_eq!(
        browser.js(
            "return document.getElementById('host-gib').value",
            json!([])
        ),
        "16"
    );
    check_figures(&browser, &exp, 16.0);
    let main_text = text_of(&browser, "#main");
    assert!(
        main_text.contains("does not know a host's memory"),
        "{main_text}"
    );
    // Two charts, a line per build in each.
    let legends = browser.js(
        "return Array.from(document.querySelectorAll('#memory-charts .legend')).map(l => l.textContent)",
        json!([]),
    );
    assert_eq!(
        legends,
        json!(["build 7build 8", "build 7build 8"]),
        "{legends}"
    );
    let lines = browser.js(
        "return document.querySelectorAll('#memory-charts polyline.line').length",
        json!([]),
    );
    assert_eq!(lines, 4, "one line per build per chart");
    browser.screenshot(&art.join("memory.png"));
    no_errors(&browser, "memory page");

    // ---- another host size: recomputed in place and kept in the URL
    browser.js(
        "const i = document.getElementById('host-gib'); i.value = '8'; i.dispatchEvent(new Event('input'));",
        json!([]),
    );
    check_figures(&browser, &exp, 8.0);
    let href = browser
        .js("return location.href", json!([]))
        .as_str()
        .expect("href")
        .to_owned();
    assert!(href.contains("host_gib=8"), "{href}");
    open(&browser, &href);
    assert_eq!(
        browser.js(
            "return document.getElementById('host-gib').value",
            json!([])
        ),
        "8"
    );
    check_figures(&browser, &exp, 8.0);
    no_errors(&browser, "memory page, 8 GiB");

    // ---- a service without samples
    open(&browser, &format!("{base}/#/memory?service=nomem"));
    let empty = text_of(&browser, "#memory-empty");
    assert!(
        empty.contains("--memory-name") && empty.contains("--memory-pid"),
        "{empty:?}"
    );
    no_errors(&browser, "memory page, no samples");
}

/// A build that makes both a CPU and a memory regression: `POST /api/v1/analyze` records both,
/// the regressions page lists them in one incident (kinds `cpu` and `memory`), and the memory
/// record's page shows private bytes per worker and links to the Memory page.
#[test]
fn a_memory_regression_is_listed_beside_the_cpu_one() {
    let art = artifacts("ui_memory_regression");
    let browser = Browser::start(1400, 1000);
    let data = art.join("data");
    let server = Server::start(
        &["--data-dir", data.to_str().expect("utf-8")],
        &art.join("server.log"),
    );
    let c = server.client();
    let now = profwatch_model::timefmt::now_ns();
    let min = 60_000_000_000i64;
    // Build 1 for the hour up to 40 minutes ago, build 2 since: 8 hosts, 2 workers each, a
    // memory reading every 20 s; build 2's workers hold 20% more private memory, its requests
    // cost 30% more CPU.
    for (build, start, private_mib, cpu) in [
        ("1", now - 100 * min, 200u64, 1e6),
        ("2", now - 40 * min, 240, 1.3e6),
    ] {
        let mut samples = Vec::new();
        for worker in 0..16u64 {
            let private = (private_mib * MIB) + worker * 3 * MIB;
            for tick in 0..(40 * 3) {
                samples.push(json!({
                    "ts": start + tick * 20_000_000_000, "service": SERVICE, "build": build,
                    "dc": "eu1", "host": format!("h{}", worker % 8), "pid": 1000 + worker,
                    "bytes": {"rss": private + 100 * MIB, "pss": private + 50 * MIB,
                        "shared_clean": 100 * MIB, "shared_dirty": 0, "private_clean": MIB,
                        "private_dirty": private - MIB, "swap": 0},
                }));
            }
        }
        for chunk in samples.chunks(1000) {
            let r = c.request(
                "POST",
                "/api/v1/memory",
                &[("content-type", "application/json")],
                json!({ "samples": chunk }).to_string().into_bytes(),
            );
            assert_eq!(r.status, 200, "{}", r.body);
        }
        let evs: Vec<_> = (0..1600)
            .map(|i| {
                let wobble = ((i * 7919) % 101) as f64 / 1000.0;
                event(
                    start + i * (40 * min / 1600),
                    SERVICE,
                    "GET /m",
                    build,
                    i as u64 % 8,
                    cpu * (1.0 + wobble),
                    None,
                )
            })
            .collect();
        let r = c.post_events(protobuf(&evs), "application/x-protobuf", None);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let report = c.request("POST", "/api/v1/analyze", &[], Vec::new());
    assert_eq!(report.status, 200, "{}", report.body);
    let regs = c.get("/api/v1/regressions").json();
    let kinds: Vec<&str> = regs
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"cpu") && kinds.contains(&"memory"),
        "a CPU and a memory record: {regs:#}"
    );
    let memory_id = regs
        .as_array()
        .expect("records")
        .iter()
        .find(|r| r["kind"] == "memory")
        .and_then(|r| r["id"].as_str())
        .expect("memory id")
        .to_owned();

    let base = c.base.clone();
    open(&browser, &format!("{base}/#/regressions"));
    let rows = browser.js(
        "return Array.from(document.querySelectorAll('section.incident tbody tr')).map(r => Array.from(r.cells).map(c => c.textContent))",
        json!([]),
    );
    let rows = rows.as_array().cloned().unwrap_or_default();
    let sections = browser.js(
        "return document.querySelectorAll('section.incident').length",
        json!([]),
    );
    assert_eq!(sections, 1, "one incident for build 2: {rows:?}");
    let has = |kind: &str, wher: &str| {
        rows.iter().any(|r| {
            r.as_array().is_some_and(|cells| {
                cells.iter().any(|c| c == kind) && cells.iter().any(|c| c == wher)
            })
        })
    };
    assert!(has("cpu", &format!("{SERVICE} · GET /m")), "{rows:?}");
    assert!(
        has("memory", &format!("{SERVICE} · memory per worker")),
        "{rows:?}"
    );
    no_errors(&browser, "regressions with a memory record");

    open(&browser, &format!("{base}/#/regression?id={memory_id}"));
    let main_text = text_of(&browser, "#main");
    assert!(
        main_text.contains("memory per worker") && main_text.contains("private bytes per worker"),
        "{main_text}"
    );
    let medians = text_of(&browser, "#medians");
    assert!(
        medians.contains("MiB → ") && medians.ends_with("MiB"),
        "{medians:?}"
    );
    let link = browser.find("#main a[href^='#/memory']", WAIT);
    browser.click(&link);
    browser.wait_for(
        "the memory page",
        "const m = document.getElementById('main'); return m.dataset.page === 'memory' && m.dataset.state === 'ready'",
        WAIT,
    );
    no_errors(&browser, "memory regression page");
}
