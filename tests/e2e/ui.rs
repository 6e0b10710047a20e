//! The dashboard in a real headless Chromium (Debian's `chromium` and `chromium-driver`) against
//! a real `profwatch server`: every page shows the seeded data, names with `<`, `>` and `&` stay
//! text, zoom and search work in the flame graph, a regression can be acknowledged, the token
//! field reaches a server with tokens, no console error happens anywhere, and a 100k-stack
//! flame graph and a 1000-endpoint overview render and work. Screenshots and the render times
//! (information only: a test asserts no wall-clock limit) land in `tests/artifacts/ui/`.

use std::time::Duration;

use profwatch_e2e::*;
use profwatch_model::RequestEvent;
use serde_json::{json, Value};

use profwatch_e2e::webdriver::Browser;

mod memory;

const WAIT: Duration = Duration::from_secs(90);
/// The endpoint whose name must stay text.
const TRICKY_ENDPOINT: &str = "GET /items/<id>&<b>";
const HOT: &str = "a::hot<&'a T>";

#[allow(clippy::too_many_arguments)]
fn event(
    ts: i64,
    service: &str,
    endpoint: &str,
    build: &str,
    host: u64,
    cpu: f64,
    instructions: Option<u64>,
) -> RequestEvent {
    RequestEvent {
        ts,
        service: service.into(),
        endpoint: endpoint.into(),
        build: build.into(),
        dc: if host.is_multiple_of(2) { "eu1" } else { "us1" }.into(),
        host: format!("web-{host}"),
        status: 200,
        cpu_ns: cpu as u64,
        instructions,
        wall_ns: cpu as u64 * 2,
        weight: 1.0,
        labels: Default::default(),
    }
}

/// `shop` (CPU time only; build 2 makes `GET /a` 8% dearer) and `search` (with instructions),
/// each over 2 builds: build 1 for the hour up to 25 minutes ago, build 2 since.
fn workload() -> Vec<RequestEvent> {
    let now = profwatch_model::timefmt::now_ns();
    let min = 60_000_000_000i64;
    let mut rng = Rng::new(42);
    let mut out = Vec::new();
    for (build, start) in [("1", now - 85 * min), ("2", now - 25 * min)] {
        for (endpoint, base, n) in [
            ("GET /a", 2_000_000.0, 3000u64),
            ("GET /b", 5_000_000.0, 3000),
            (TRICKY_ENDPOINT, 800_000.0, 300),
            ("POST /checkout", 9_000_000.0, 300),
        ] {
            let factor = if build == "2" && endpoint == "GET /a" {
                1.08
            } else {
                1.0
            };
            for i in 0..n {
                let cpu = base * factor * (0.3 * rng.normal()).exp();
                let ts = start + (i as i64 * 24 * min) / n as i64;
                out.push(event(ts, "shop", endpoint, build, i % 12, cpu, None));
            }
        }
    }
    for (build, start) in [("b1", now - 85 * min), ("b2", now - 25 * min)] {
        for (endpoint, base) in [
            ("GET /search", 3e6),
            ("GET /suggest", 4e5),
            ("GET /big", 6e6),
        ] {
            let factor = if build == "b2" && endpoint == "GET /suggest" {
                0.8
            } else {
                1.0
            };
            for i in 0..200u64 {
                let cpu = base * factor * (0.2 * rng.normal()).exp();
                let ts = start + (i as i64 * 24 * min) / 200;
                out.push(event(
                    ts,
                    "search",
                    endpoint,
                    build,
                    i % 4,
                    cpu,
                    Some((cpu * 3.1) as u64),
                ));
            }
        }
    }
    out
}

/// Folded stacks of `shop GET /a` per build: `a::hot<&'a T>` grows in build 2.
fn shop_profile(build: &str) -> String {
    let hot = if build == "2" { 1320 } else { 1000 };
    [
        (format!("main;serve<Cart&Co>;a::handle<Cart>;{HOT}"), hot),
        (
            "main;serve<Cart&Co>;a::handle<Cart>;a::cold;std::vec::Vec<T>::push".to_owned(),
            1000,
        ),
        ("main;serve<Cart&Co>;b::handle;operator<<".to_owned(), 2000),
    ]
    .iter()
    .map(|(s, n)| format!("{s} {n}\n"))
    .collect()
}

fn post_profile(c: &Client, query: &str, body: String) {
    let mut req = profwatch_e2e::http_client_builder()
        .timeout(Duration::from_secs(300))
        .build()
        .expect("client")
        .post(format!("{}/api/v1/profiles?format=folded&{query}", c.base))
        .body(body);
    if let Some(t) = &c.token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let r = req.send().expect("post profile");
    assert!(r.status().is_success(), "{:?}", r.text());
}

fn post(c: &Client, path: &str) -> Value {
    let r = profwatch_e2e::http_client()
        .post(format!("{}{path}", c.base))
        .send()
        .expect("post");
    assert!(r.status().is_success(), "{path}");
    r.json().expect("json")
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Opens a dashboard URL and waits until the page says it is ready; fails on an error state.
fn open(b: &Browser, url: &str) {
    b.goto("about:blank");
    b.goto(url);
    b.wait_for(
        url,
        "const m = document.getElementById('main'); return !!m && (m.dataset.state === 'ready' || m.dataset.state === 'error');",
        WAIT,
    );
    let state = b.js(
        "return document.getElementById('main').dataset.state",
        json!([]),
    );
    let text = b.js(
        "return document.getElementById('main').innerText",
        json!([]),
    );
    assert_eq!(state, "ready", "{url} failed: {text}");
}

/// Fails on any error the page logged (console.error, window errors, failed requests).
fn no_errors(b: &Browser, step: &str) {
    let page = b.js("return window.__pwErrors || []", json!([]));
    assert_eq!(page, json!([]), "{step}: errors in the page");
    let severe: Vec<_> = b
        .log()
        .into_iter()
        .filter(|(level, _)| level == "SEVERE" || level == "WARNING")
        .collect();
    assert!(severe.is_empty(), "{step}: browser log: {severe:#?}");
}

fn text_of(b: &Browser, css: &str) -> String {
    b.js(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';",
        json!([css]),
    )
    .as_str()
    .unwrap_or("")
    .to_owned()
}

/// The viewport position of the middle of the first flame frame named `name`.
fn frame_position(b: &Browser, name: &str) -> (f64, f64) {
    let v = b.js(
        "const f = window.__pw.flame; const fl = f.flat; const i = fl.names.indexOf(arguments[0]);
         if (i < 0) return null;
         const r = f.canvas.getBoundingClientRect();
         return [r.left + ((fl.x[i] - f.x0) + fl.total[i] / 2) * f.scale, r.top + fl.depth[i] * 18 + 9];",
        json!([name]),
    );
    let x = v[0].as_f64().unwrap_or_else(|| panic!("no frame {name}"));
    let y = v[1].as_f64().expect("y");
    (x, y)
}

fn render_ms(b: &Browser, what: &str) -> f64 {
    b.js("return window.__pw.renders[arguments[0]]", json!([what]))
        .as_f64()
        .unwrap_or_else(|| panic!("no render time for {what}"))
}

#[test]
fn the_dashboard_works_in_a_real_browser() {
    let art = artifacts("ui");
    let browser = Browser::start(1400, 1000);
    let shot = |name: &str| browser.screenshot(&art.join(format!("{name}.png")));

    // ---- a server with two services, two builds, profiles and one regression
    let data = art.join("data");
    let server = Server::start(
        &[
            "--data-dir",
            data.to_str().expect("utf-8"),
            "--analysis-interval",
            "0s",
        ],
        &art.join("server.log"),
    );
    let c = server.client();
    for chunk in workload().chunks(5000) {
        let r = c.post_events(protobuf(chunk), "application/x-protobuf", None);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let now_s = profwatch_model::timefmt::now_ns() / 1_000_000_000;
    let ts = (now_s - 20 * 60).to_string();
    for (build, ago_min) in [("1", 40), ("2", 20)] {
        post_profile(
            &c,
            &format!(
                "service=shop&endpoint=GET%20/a&build={build}&ts={}",
                now_s - ago_min * 60
            ),
            shop_profile(build),
        );
    }
    post_profile(
        &c,
        &format!("service=search&endpoint=GET%20/big&build=b1&ts={ts}"),
        big_profile(),
    );
    let report = post(&c, "/api/v1/analyze");
    assert_eq!(report["new_regressions"], 1, "{report:#}");
    let regs = c.get("/api/v1/regressions").json();
    let id = regs[0]["id"].as_str().expect("id").to_owned();
    assert_eq!(regs[0]["culprits"][0]["function"], HOT, "{regs:#}");
    let base = c.base.clone();

    // ---- overview
    open(&browser, &format!("{base}/"));
    let tables = browser.js(
        "return Array.from(document.querySelectorAll('table.overview')).map(t => [t.dataset.service,
           Array.from(t.querySelectorAll('tbody tr')).map(r => r.dataset.endpoint)])",
        json!([]),
    );
    assert_eq!(tables[0][0], "search", "{tables}");
    assert_eq!(tables[1][0], "shop", "{tables}");
    assert_eq!(
        tables[1][1][0], "GET /a",
        "the endpoint with an open regression comes first: {tables}"
    );
    assert_eq!(tables[1][1].as_array().map(Vec::len), Some(4), "{tables}");
    let main_text = text_of(&browser, "#main");
    assert!(main_text.contains(TRICKY_ENDPOINT), "{main_text}");
    assert!(main_text.contains("Open regressions (1)"), "{main_text}");
    assert!(main_text.contains("+8") || main_text.contains("+7") || main_text.contains("+9"));
    assert_eq!(
        browser.js(
            "return document.querySelectorAll('#main id, #main b').length",
            json!([])
        ),
        0,
        "a name became markup"
    );
    browser.wait_for(
        "sparklines",
        "return document.querySelectorAll('.spark polyline').length >= 4",
        WAIT,
    );
    shot("overview");
    no_errors(&browser, "overview");

    // ---- endpoint page: chart with band, build markers, dc split, builds table
    open(
        &browser,
        &format!("{base}/#/endpoint?service=shop&endpoint={}", enc("GET /a")),
    );
    let markers = browser.js(
        "return Array.from(document.querySelectorAll('.marker text')).map(t => t.textContent)",
        json!([]),
    );
    assert!(
        markers.to_string().contains("build 1") && markers.to_string().contains("build 2"),
        "{markers}"
    );
    assert!(
        browser
            .js(
                "return document.querySelectorAll('polygon.band').length",
                json!([])
            )
            .as_u64()
            >= Some(1)
    );
    let legend = text_of(&browser, "#main");
    assert!(legend.contains("eu1") && legend.contains("us1"), "dc split");
    shot("endpoint");
    browser.js(
        "document.querySelector('#main section:last-child').scrollIntoView()",
        json!([]),
    );
    shot("endpoint-builds");
    no_errors(&browser, "endpoint");
    // Clicking the chart opens the flame graph of that window.
    let chart = browser.find("svg.chart", WAIT);
    browser.click(&chart);
    browser.wait_for(
        "flame graph of a window",
        "return location.hash.startsWith('#/flame') && location.hash.includes('from=')",
        WAIT,
    );

    // ---- flame graph: draw, hover, search, zoom
    open(
        &browser,
        &format!(
            "{base}/#/flame?service=shop&endpoint={}&build=2",
            enc("GET /a")
        ),
    );
    let drawn = text_of(&browser, ".flame-status");
    assert!(drawn.contains("drawn"), "{drawn}");
    // The page's own load timing (what `profwatch-bench flame` reads): every part present, in
    // the order it happened, for the tree on screen.
    browser.wait_for(
        "the flame page's load timing",
        "return !!window.__pw.loads.flame",
        WAIT,
    );
    let load = browser.js("return window.__pw.loads.flame", json!([]));
    let ms = |k: &str| {
        let v = load[k].as_f64().unwrap_or(f64::NAN);
        assert!(v.is_finite() && v >= 0.0, "{k} in {load}");
        v
    };
    assert!(ms("profile_request_ms") <= ms("request_ms"), "{load}");
    assert!(ms("profile_parse_ms") <= ms("request_ms"), "{load}");
    assert!(ms("request_ms") + ms("draw_ms") <= ms("frame_ms"), "{load}");
    assert_eq!(
        load["nodes"],
        browser.js("return window.__pw.flame.flat.count", json!([])),
        "{load}"
    );
    let (x, y) = frame_position(&browser, HOT);
    browser.pointer(x, y, false);
    browser.wait_for(
        "tooltip",
        "return !document.getElementById('tooltip').hidden",
        WAIT,
    );
    let tip = text_of(&browser, "#tooltip");
    assert!(tip.contains(HOT), "{tip}");
    assert!(tip.contains("per request") && tip.contains("self"), "{tip}");
    shot("flame-hover");
    let search = browser.find("#flame-search", WAIT);
    browser.send_keys(&search, "hot<&");
    browser.wait_for(
        "search matches",
        "return Number(document.querySelector('.flame-wrap').dataset.matched) > 0",
        WAIT,
    );
    let matched: f64 = browser
        .js(
            "return Number(document.querySelector('.flame-wrap').dataset.matched)",
            json!([]),
        )
        .as_f64()
        .expect("share");
    assert!(
        (matched - 1320.0 / 4320.0).abs() < 1e-3,
        "matched {matched}"
    );
    assert!(
        browser
            .js("return location.hash", json!([]))
            .to_string()
            .contains("q=hot"),
        "the search is in the URL"
    );
    shot("flame-search");
    let (x, y) = frame_position(&browser, "a::handle<Cart>");
    browser.pointer(x, y, true);
    browser.wait_for(
        "zoom",
        "return document.querySelector('.flame-wrap').dataset.zoom === 'a::handle<Cart>'",
        WAIT,
    );
    let hash = browser.js("return location.hash", json!([])).to_string();
    assert!(hash.contains("zoom="), "the zoom is in the URL: {hash}");
    shot("flame-zoom");
    // The deep link restores zoom and search.
    let link = browser
        .js("return location.href", json!([]))
        .as_str()
        .expect("href")
        .to_owned();
    open(&browser, &link);
    assert_eq!(
        browser.js(
            "return document.querySelector('.flame-wrap').dataset.zoom",
            json!([])
        ),
        "a::handle<Cart>"
    );
    no_errors(&browser, "flame graph");

    // ---- compare two builds
    open(
        &browser,
        &format!(
            "{base}/#/compare?service=shop&endpoint={}&a=1&b=2",
            enc("GET /a")
        ),
    );
    let first_fn = text_of(&browser, "table.data tbody tr td code");
    assert_eq!(first_fn, HOT, "the largest self increase leads");
    let th = browser.find("th[data-key=name]", WAIT);
    browser.click(&th);
    let sorted_first = text_of(&browser, "table.data tbody tr td code");
    assert_eq!(sorted_first, "a::cold", "sorted by name");
    shot("compare");
    // Two windows instead of two builds: the hour before the rollout against the time since.
    open(
        &browser,
        &format!(
            "{base}/#/compare?service=shop&endpoint={}&mode=window&a.from={}&a.to={}&b.from={}&b.to={}",
            enc("GET /a"),
            now_s - 90 * 60,
            now_s - 30 * 60,
            now_s - 30 * 60,
            now_s + 60
        ),
    );
    assert_eq!(
        text_of(&browser, "table.data tbody tr td code"),
        HOT,
        "windows compare like builds"
    );
    shot("compare-windows");
    no_errors(&browser, "compare");

    // The dashboard's own routes leave the API's alone.
    let http = profwatch_e2e::http_client();
    let js = http
        .get(format!("{base}/assets/app.js"))
        .send()
        .expect("asset");
    assert_eq!(js.status(), 200);
    assert!(js
        .headers()
        .get("content-security-policy")
        .is_some_and(|v| v.to_str().unwrap_or("").contains("default-src 'none'")));
    assert_eq!(c.get("/assets/nope.js").status, 404);
    let api404 = c.get("/api/v1/nope");
    assert_eq!(api404.status, 404);
    assert!(api404.json()["error"].is_string(), "{}", api404.body);

    // ---- regressions: list, detail, acknowledge
    open(&browser, &format!("{base}/#/regressions"));
    let listed = text_of(&browser, "#main");
    assert!(listed.contains("shop · GET /a"), "{listed}");
    assert!(
        listed.contains("Incident: build 2"),
        "grouped by incident: {listed}"
    );
    shot("regressions");
    open(&browser, &format!("{base}/#/regression?id={id}"));
    let detail = text_of(&browser, "#main");
    assert!(detail.contains(HOT) && detail.contains("build"), "{detail}");
    assert_eq!(text_of(&browser, "#reg-state"), "open");
    let ack = browser.find("#ack", WAIT);
    browser.click(&ack);
    browser.wait_for(
        "acknowledged",
        "return document.getElementById('reg-state').textContent === 'acknowledged'",
        WAIT,
    );
    assert_eq!(
        c.get(&format!("/api/v1/regressions/{id}")).json()["state"],
        "acknowledged"
    );
    shot("regression");
    browser.js(
        "document.querySelector('#main section:last-child').scrollIntoView()",
        json!([]),
    );
    shot("regression-culprits");
    no_errors(&browser, "regression");

    // ---- size: a flame graph of 100k distinct stacks (all ~111k nodes) renders and searches;
    // its render time is written to timings.txt as information, never asserted (no wall-clock
    // limits in tests on a shared 2-core machine)
    let mut timings = Vec::new();
    for nodes in [20_000, 200_000] {
        open(
            &browser,
            &format!(
                "{base}/#/flame?service=search&endpoint={}&build=b1&nodes={nodes}",
                enc("GET /big")
            ),
        );
        let ms = render_ms(&browser, "flame");
        let count = browser.js("return window.__pw.flame.flat.count", json!([]));
        timings.push(format!(
            "flame graph, 100k stacks, {count} nodes: {ms:.0} ms"
        ));
    }
    shot("flame-100k");
    let search = browser.find("#flame-search", WAIT);
    browser.send_keys(&search, "leaf3<");
    browser.wait_for(
        "search on 100k",
        "return Number(document.querySelector('.flame-wrap').dataset.matched) > 0",
        WAIT,
    );
    no_errors(&browser, "flame graph 100k");
    drop(server);

    // ---- a server with tokens and 1000 endpoints: the token field, and overview speed
    let data = art.join("data-wide");
    let wide = Server::start(
        &[
            "--data-dir",
            data.to_str().expect("utf-8"),
            "--token",
            "s3cret-token-0001=default",
        ],
        &art.join("server-wide.log"),
    );
    let wc = wide.client().with_token("s3cret-token-0001");
    let now = profwatch_model::timefmt::now_ns();
    let mut evs = Vec::new();
    for e in 0..1000u64 {
        for (k, build) in ["w1", "w2"].iter().enumerate() {
            for j in 0..2u64 {
                let ts = now - (40 - 20 * k as i64) * 60_000_000_000 + j as i64 * 1_000_000_000;
                let cpu = 1e6 + (e * 997 % 1000) as f64 * 1000.0 + j as f64;
                evs.push(event(
                    ts,
                    "wide",
                    &format!("GET /e{e:04}"),
                    build,
                    j,
                    cpu,
                    None,
                ));
            }
        }
    }
    let r = wc.post_events(protobuf(&evs), "application/x-protobuf", None);
    assert_eq!(r.status, 200, "{}", r.body);
    let wbase = wide.client().base;
    open(&browser, &format!("{wbase}/#/nowhere"));
    let token = browser.find("#token", WAIT);
    browser.send_keys(&token, "s3cret-token-0001");
    let set = browser.find("#token-form button", WAIT);
    browser.click(&set);
    let mut best = f64::INFINITY;
    for _ in 0..2 {
        open(&browser, &format!("{wbase}/#/"));
        let rows = browser.js(
            "return document.querySelectorAll('table.overview tbody tr').length",
            json!([]),
        );
        assert_eq!(rows, 1000, "every endpoint is listed");
        best = best.min(render_ms(&browser, "overview"));
    }
    timings.push(format!("overview, 1000 endpoints: {best:.0} ms"));
    shot("overview-1000");
    no_errors(&browser, "overview 1000");
    std::fs::write(art.join("timings.txt"), timings.join("\n") + "\n").expect("timings");
    eprintln!("{}", timings.join("\n"));
}
