//! The contract itself: each function writes through [`Store::write`] and checks the answers
//! against figures computed here from the same events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use profwatch_model::profile::{
    LabelFilter, ProfileBatch, ProfileQuery, SampleLabels, StackSample,
};
use profwatch_model::query::{
    BuildsQuery, CostSamplesQuery, CostStats, EndpointsQuery, GroupBy, SeriesQuery, ServicesQuery,
    TimeRange, TimeseriesQuery,
};
use profwatch_model::regression::{Culprit, RegressionRecord, RegressionState};
use profwatch_model::rng::Rng;
use profwatch_model::timefmt::{now_ns, NANOS_PER_SEC};
use profwatch_model::{RequestEvent, Tenant};
use profwatch_store::{Store, StoreError, Written};

const MINUTE: i64 = 60 * NANOS_PER_SEC;

pub use crate::memory::{
    memory_idempotency_keys_drop_duplicates, memory_means_per_process_by_group,
    memory_processes_per_bucket, memory_services_are_listed_per_tenant, memory_timeseries_buckets,
};

pub use crate::functions::function_costs_match_the_samples;

pub fn tenant() -> Tenant {
    Tenant("acme".into())
}

/// A 5-minute boundary about an hour ago: every test's events start there.
pub fn base() -> i64 {
    (now_ns() - 3600 * NANOS_PER_SEC) / (5 * MINUTE) * (5 * MINUTE)
}

pub fn ev(
    ts: i64,
    endpoint: &str,
    build: &str,
    dc: &str,
    host: &str,
    cpu: u64,
    instr: Option<u64>,
) -> RequestEvent {
    RequestEvent {
        ts,
        service: "shop".into(),
        endpoint: endpoint.into(),
        build: build.into(),
        dc: dc.into(),
        host: host.into(),
        status: 200,
        cpu_ns: cpu,
        instructions: instr,
        wall_ns: cpu * 2,
        weight: 1.0,
        labels: Default::default(),
    }
}

/// A roughly log-normal positive value around `median`.
fn cost(rng: &mut Rng, median: f64) -> u64 {
    let u: f64 = (0..4).map(|_| rng.uniform()).sum::<f64>() - 2.0;
    (median * (u * 0.8).exp()) as u64
}

pub fn all_time() -> TimeRange {
    TimeRange {
        from: base() - 86_400 * NANOS_PER_SEC,
        to: now_ns() + MINUTE,
    }
}

fn weighted_quantile(mut v: Vec<(f64, f64)>, q: f64) -> f64 {
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: f64 = v.iter().map(|x| x.1).sum();
    let mut seen = 0.0;
    for (x, w) in &v {
        seen += w;
        if seen >= q * total {
            return *x;
        }
    }
    v.last().map_or(0.0, |x| x.0)
}

fn close(got: f64, want: f64, rel: f64, what: &str) {
    let err = if want == 0.0 {
        got.abs()
    } else {
        (got / want - 1.0).abs()
    };
    assert!(
        err <= rel,
        "{what}: got {got}, want {want} (relative error {err:.5} > {rel})"
    );
}

/// Checks one group's figures against the events that belong to it.
pub fn check(stats: &CostStats, events: &[&RequestEvent], what: &str) {
    let w: f64 = events.iter().map(|e| e.weight).sum();
    close(stats.requests, w, 1e-9, &format!("{what} requests"));
    let mean = events
        .iter()
        .map(|e| e.cpu_ns as f64 * e.weight)
        .sum::<f64>()
        / w;
    close(stats.cpu_ns.mean, mean, 1e-6, &format!("{what} cpu mean"));
    let vals: Vec<(f64, f64)> = events.iter().map(|e| (e.cpu_ns as f64, e.weight)).collect();
    for (q, got) in [
        (0.5, stats.cpu_ns.p50),
        (0.9, stats.cpu_ns.p90),
        (0.99, stats.cpu_ns.p99),
    ] {
        close(
            got,
            weighted_quantile(vals.clone(), q),
            0.011,
            &format!("{what} cpu p{}", q * 100.0),
        );
    }
    let with: Vec<&&RequestEvent> = events.iter().filter(|e| e.instructions.is_some()).collect();
    let iw: f64 = with.iter().map(|e| e.weight).sum();
    close(
        stats.instructions_requests,
        iw,
        1e-9,
        &format!("{what} instructions_requests"),
    );
    match &stats.instructions {
        None => assert!(with.is_empty(), "{what}: instructions missing"),
        Some(d) => {
            let mean = with
                .iter()
                .map(|e| e.instructions.unwrap_or(0) as f64 * e.weight)
                .sum::<f64>()
                / iw;
            close(d.mean, mean, 1e-6, &format!("{what} instr mean"));
            let vals: Vec<(f64, f64)> = with
                .iter()
                .map(|e| (e.instructions.unwrap_or(0) as f64, e.weight))
                .collect();
            close(
                d.p50,
                weighted_quantile(vals.clone(), 0.5),
                0.011,
                &format!("{what} instr p50"),
            );
            close(
                d.p99,
                weighted_quantile(vals, 0.99),
                0.011,
                &format!("{what} instr p99"),
            );
        }
    }
}

/// A mixed workload: 3 endpoints, 2 builds, 2 dcs, 3 hosts, over 30 minutes.
pub fn workload(n: usize, seed: u64) -> Vec<RequestEvent> {
    let mut rng = Rng::new(seed);
    let b = base();
    (0..n)
        .map(|i| {
            let endpoint = ["GET /cart/{id}", "POST /checkout", "GET /search"][i % 3];
            let build = ["811", "812"][(i / 3) % 2];
            let dc = ["eu1", "us2"][(rng.next_u64() % 2) as usize];
            let host = ["web-1", "web-2", "web-3"][(rng.next_u64() % 3) as usize];
            let median = 1e6 * (1 + i % 3) as f64 * if build == "812" { 1.05 } else { 1.0 };
            let cpu = cost(&mut rng, median);
            let instr = (endpoint != "GET /search").then(|| cpu * 3 + rng.next_u64() % 1000);
            ev(
                b + (i as i64 % 1800) * NANOS_PER_SEC,
                endpoint,
                build,
                dc,
                host,
                cpu,
                instr,
            )
        })
        .collect()
}

pub async fn write_all(store: &Arc<dyn Store>, events: &[RequestEvent]) {
    for chunk in events.chunks(500) {
        store.write(&tenant(), chunk.to_vec()).await.expect("write");
    }
}

fn eq_query(group_by: GroupBy) -> EndpointsQuery {
    EndpointsQuery {
        tenant: tenant(),
        service: "shop".into(),
        range: all_time(),
        group_by,
    }
}

pub async fn endpoints_match_the_truth(store: Arc<dyn Store>) {
    let events = workload(6000, 7);
    write_all(&store, &events).await;
    let rows = store
        .endpoints(&eq_query(GroupBy::None))
        .await
        .expect("query");
    let names: Vec<&str> = rows.iter().map(|r| r.endpoint.as_str()).collect();
    assert_eq!(names, ["GET /cart/{id}", "GET /search", "POST /checkout"]);
    for r in &rows {
        assert_eq!(r.group, None);
        let mine: Vec<&RequestEvent> = events.iter().filter(|e| e.endpoint == r.endpoint).collect();
        check(&r.stats, &mine, &r.endpoint);
    }
}

pub async fn group_by_each_column(store: Arc<dyn Store>) {
    let events = workload(3000, 11);
    write_all(&store, &events).await;
    for (g, key) in [
        (
            GroupBy::Build,
            (|e: &RequestEvent| e.build.clone()) as fn(&RequestEvent) -> String,
        ),
        (GroupBy::Dc, |e: &RequestEvent| e.dc.clone()),
        (GroupBy::Host, |e: &RequestEvent| e.host.clone()),
    ] {
        let rows = store.endpoints(&eq_query(g)).await.expect("query");
        let mut truth: BTreeMap<(String, String), Vec<&RequestEvent>> = BTreeMap::new();
        for e in &events {
            truth
                .entry((e.endpoint.clone(), key(e)))
                .or_default()
                .push(e);
        }
        let got: Vec<(String, String)> = rows
            .iter()
            .map(|r| (r.endpoint.clone(), r.group.clone().unwrap_or_default()))
            .collect();
        let want: Vec<(String, String)> = truth.keys().cloned().collect();
        assert_eq!(got, want, "{g:?}: groups and order");
        for r in &rows {
            let k = (r.endpoint.clone(), r.group.clone().unwrap_or_default());
            check(&r.stats, &truth[&k], &format!("{g:?} {k:?}"));
        }
    }
}

pub async fn timeseries_buckets(store: Arc<dyn Store>) {
    let events = workload(3000, 13);
    write_all(&store, &events).await;
    let b = base();
    let q = TimeseriesQuery {
        tenant: tenant(),
        service: "shop".into(),
        endpoint: "POST /checkout".into(),
        range: TimeRange {
            from: b,
            to: b + 30 * MINUTE,
        },
        step: 5 * MINUTE,
        group_by: GroupBy::None,
    };
    let points = store.timeseries(&q).await.expect("query");
    assert_eq!(points.len(), 6, "six 5-minute buckets");
    for (i, p) in points.iter().enumerate() {
        let start = b + i as i64 * 5 * MINUTE;
        assert_eq!(p.time, start / NANOS_PER_SEC);
        assert_eq!(p.group, None);
        let mine: Vec<&RequestEvent> = events
            .iter()
            .filter(|e| {
                e.endpoint == "POST /checkout" && e.ts >= start && e.ts < start + 5 * MINUTE
            })
            .collect();
        check(&p.stats, &mine, &format!("bucket {i}"));
    }
    let by_build = store
        .timeseries(&TimeseriesQuery {
            group_by: GroupBy::Build,
            ..q
        })
        .await
        .expect("query");
    assert_eq!(by_build.len(), 12);
    assert_eq!(by_build[0].group.as_deref(), Some("811"));
    assert_eq!(by_build[1].group.as_deref(), Some("812"));
    assert_eq!(by_build[0].time, by_build[1].time);
}

pub async fn services_in_range(store: Arc<dyn Store>) {
    let b = base();
    let mut a = ev(b, "GET /", "1", "", "", 10, None);
    a.service = "alpha".into();
    let mut z = ev(b + 10 * MINUTE, "GET /", "1", "", "", 10, None);
    z.service = "zulu".into();
    store
        .write(&tenant(), vec![z.clone(), a.clone(), a])
        .await
        .expect("write");
    let all = store
        .services(&ServicesQuery {
            tenant: tenant(),
            range: all_time(),
        })
        .await
        .expect("query");
    let names: Vec<(&str, f64)> = all
        .iter()
        .map(|s| (s.service.as_str(), s.requests))
        .collect();
    assert_eq!(names, [("alpha", 2.0), ("zulu", 1.0)]);
    let late = store
        .services(&ServicesQuery {
            tenant: tenant(),
            range: TimeRange {
                from: b + MINUTE,
                to: b + 20 * MINUTE,
            },
        })
        .await
        .expect("query");
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].service, "zulu");
}

pub async fn tenants_are_isolated(store: Arc<dyn Store>) {
    let events = workload(300, 17);
    write_all(&store, &events).await;
    let other = Tenant("globex".into());
    assert!(store
        .services(&ServicesQuery {
            tenant: other.clone(),
            range: all_time()
        })
        .await
        .expect("query")
        .is_empty());
    let q = EndpointsQuery {
        tenant: other.clone(),
        ..eq_query(GroupBy::None)
    };
    assert!(store.endpoints(&q).await.expect("query").is_empty());
    store
        .write(&other, vec![ev(base(), "GET /x", "1", "", "", 5, None)])
        .await
        .expect("write");
    let mine = store
        .endpoints(&eq_query(GroupBy::None))
        .await
        .expect("query");
    assert!(mine.iter().all(|r| r.endpoint != "GET /x"));
    let theirs = store.endpoints(&q).await.expect("query");
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].stats.requests, 1.0);
}

pub async fn range_is_half_open(store: Arc<dyn Store>) {
    let b = base();
    let events = vec![
        ev(b - 1, "GET /", "1", "", "", 100, None),
        ev(b, "GET /", "1", "", "", 200, None),
        ev(b + MINUTE - 1, "GET /", "1", "", "", 300, None),
        ev(b + MINUTE, "GET /", "1", "", "", 400, None),
    ];
    store.write(&tenant(), events).await.expect("write");
    let q = EndpointsQuery {
        range: TimeRange {
            from: b,
            to: b + MINUTE,
        },
        ..eq_query(GroupBy::None)
    };
    let rows = store.endpoints(&q).await.expect("query");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].stats.requests, 2.0);
    close(
        rows[0].stats.cpu_ns.mean,
        250.0,
        1e-9,
        "mean of the two inside",
    );
}

pub async fn weights_count(store: Arc<dyn Store>) {
    let b = base();
    let mut heavy = ev(b, "GET /", "1", "", "", 1000, Some(10));
    heavy.weight = 9.0;
    let light = ev(b, "GET /", "1", "", "", 100, Some(1));
    store
        .write(&tenant(), vec![heavy.clone(), light.clone()])
        .await
        .expect("write");
    let rows = store
        .endpoints(&eq_query(GroupBy::None))
        .await
        .expect("query");
    check(&rows[0].stats, &[&heavy, &light], "weighted");
    close(rows[0].stats.requests, 10.0, 1e-9, "weighted count");
    close(rows[0].stats.cpu_ns.p50, 1000.0, 0.006, "weighted p50");
}

pub async fn instructions_absent_is_null(store: Arc<dyn Store>) {
    let b = base();
    store
        .write(
            &tenant(),
            vec![
                ev(b, "GET /a", "1", "", "", 10, None),
                ev(b, "GET /b", "1", "", "", 10, Some(77)),
                ev(b, "GET /b", "1", "", "", 10, None),
            ],
        )
        .await
        .expect("write");
    let rows = store
        .endpoints(&eq_query(GroupBy::None))
        .await
        .expect("query");
    assert_eq!(rows[0].stats.instructions, None);
    assert_eq!(rows[0].stats.instructions_requests, 0.0);
    let b_stats = &rows[1].stats;
    assert_eq!(b_stats.instructions_requests, 1.0);
    close(
        b_stats.instructions.as_ref().map_or(0.0, |d| d.mean),
        77.0,
        1e-9,
        "instructions over the requests that had them",
    );
}

pub async fn large_and_concurrent_batches(store: Arc<dyn Store>) {
    let events = workload(40_000, 19);
    let mut tasks = Vec::new();
    for chunk in events.chunks(10_000) {
        let store = store.clone();
        let chunk = chunk.to_vec();
        tasks.push(tokio::spawn(
            async move { store.write(&tenant(), chunk).await },
        ));
    }
    for t in tasks {
        t.await.expect("join").expect("write");
    }
    let rows = store
        .endpoints(&eq_query(GroupBy::Build))
        .await
        .expect("query");
    let total: f64 = rows.iter().map(|r| r.stats.requests).sum();
    assert_eq!(total, 40_000.0);
    for r in &rows {
        let mine: Vec<&RequestEvent> = events
            .iter()
            .filter(|e| e.endpoint == r.endpoint && Some(&e.build) == r.group.as_ref())
            .collect();
        check(&r.stats, &mine, &format!("{} {:?}", r.endpoint, r.group));
    }
}

pub fn profile_batch(ts: i64, endpoint: &str, build: &str, stacks: &[(&str, u64)]) -> ProfileBatch {
    ProfileBatch {
        ts,
        labels: SampleLabels {
            service: "shop".into(),
            endpoint: endpoint.into(),
            build: build.into(),
            dc: "eu1".into(),
            host: "web-1".into(),
            extra: [("flag".to_owned(), "on".to_owned())].into(),
        },
        samples: stacks
            .iter()
            .map(|(s, n)| StackSample {
                frames: s.split(';').map(str::to_owned).collect(),
                samples: *n,
                cpu_ns: n * 10_101_010,
            })
            .collect(),
    }
}

pub fn pq(filters: &[(&str, &str)], range: TimeRange) -> ProfileQuery {
    ProfileQuery {
        tenant: tenant(),
        service: "shop".into(),
        range,
        filters: filters
            .iter()
            .map(|(k, v)| LabelFilter {
                key: (*k).into(),
                value: (*v).into(),
            })
            .collect(),
    }
}

pub async fn profiles_sum_per_stack_and_filter_by_label(store: Arc<dyn Store>) {
    let b = base();
    let batches = [
        profile_batch(
            b,
            "GET /cart",
            "811",
            &[
                ("main;serve;cart::load", 10),
                ("main;serve;json::encode<T>", 5),
            ],
        ),
        profile_batch(
            b + MINUTE,
            "GET /cart",
            "811",
            &[("main;serve;cart::load", 7)],
        ),
        profile_batch(
            b + MINUTE,
            "GET /cart",
            "812",
            &[("main;serve;cart::load", 20)],
        ),
        profile_batch(
            b + 2 * MINUTE,
            "POST /pay",
            "812",
            &[("main;serve;pay::charge", 3)],
        ),
    ];
    for chunk in batches.chunks(2) {
        store
            .write_profiles(&tenant(), chunk.to_vec())
            .await
            .expect("write profiles");
    }
    // Stack samples and events share a store: events must be unaffected.
    store
        .write(
            &tenant(),
            vec![ev(b, "GET /cart", "811", "eu1", "web-1", 100, None)],
        )
        .await
        .expect("write");

    let all = store.profile(&pq(&[], all_time())).await.expect("profile");
    let merged = all.merged();
    let get = |m: &[(&[String], u64, u64)], s: &str| {
        m.iter()
            .find(|(f, _, _)| f.join(";") == s)
            .map(|(_, n, c)| (*n, *c))
    };
    assert_eq!(
        get(&merged, "main;serve;cart::load"),
        Some((37, 37 * 10_101_010))
    );
    assert_eq!(
        get(&merged, "main;serve;json::encode<T>").map(|x| x.0),
        Some(5)
    );
    assert_eq!(get(&merged, "main;serve;pay::charge").map(|x| x.0), Some(3));
    assert_eq!(merged.len(), 3);
    for r in &all.rows {
        assert_eq!(
            r.labels.extra.get("flag").map(String::as_str),
            Some("on"),
            "extra labels kept"
        );
        assert_eq!(r.labels.dc, "eu1");
    }
    // (labels, stack) appear once each: build 811 and 812 rows for cart::load stay apart.
    assert_eq!(
        all.rows
            .iter()
            .filter(|r| r.frames.last().map(String::as_str) == Some("cart::load"))
            .count(),
        2
    );

    let only_812 = store
        .profile(&pq(&[("build", "812")], all_time()))
        .await
        .expect("profile");
    let only_812 = only_812.merged();
    assert_eq!(
        get(&only_812, "main;serve;cart::load").map(|x| x.0),
        Some(20)
    );
    assert_eq!(only_812.len(), 2);
    let flag = store
        .profile(&pq(
            &[("flag", "on"), ("endpoint", "POST /pay")],
            all_time(),
        ))
        .await
        .expect("profile");
    assert_eq!(flag.merged().len(), 1);
    let none = store
        .profile(&pq(&[("flag", "off")], all_time()))
        .await
        .expect("profile");
    assert!(none.rows.is_empty());
    assert_eq!(none.span, None, "no samples, no span");
    // The span is the data's, not the query's: first batch to just after the last.
    assert_eq!(
        all.span,
        Some(TimeRange {
            from: b,
            to: b + 2 * MINUTE + 1
        })
    );
    let cart = store
        .profile(&pq(&[("endpoint", "GET /cart")], all_time()))
        .await
        .expect("profile");
    assert_eq!(
        cart.span,
        Some(TimeRange {
            from: b,
            to: b + MINUTE + 1
        })
    );
    let window = store
        .profile(&pq(
            &[],
            TimeRange {
                from: b + MINUTE,
                to: b + 2 * MINUTE,
            },
        ))
        .await
        .expect("profile");
    let window = window.merged();
    assert_eq!(window.len(), 1, "only the minute-1 samples: {window:?}");
    assert_eq!(window[0].1, 27);

    let other = ProfileQuery {
        tenant: Tenant("globex".into()),
        ..pq(&[], all_time())
    };
    assert!(store
        .profile(&other)
        .await
        .expect("profile")
        .rows
        .is_empty());
    let events = store
        .endpoints(&eq_query(GroupBy::None))
        .await
        .expect("query");
    assert_eq!(events.len(), 1);
}

pub async fn many_profile_batches_survive_flushes(store: Arc<dyn Store>) {
    let b = base();
    let mut expected = 0u64;
    for i in 0..40u64 {
        let stacks: Vec<(String, u64)> = (0..50)
            .map(|k| (format!("main;f{};g{}", k % 7, (k + i) % 11), 1 + k))
            .collect();
        let refs: Vec<(&str, u64)> = stacks.iter().map(|(s, n)| (s.as_str(), *n)).collect();
        expected += refs.iter().map(|(_, n)| n).sum::<u64>();
        store
            .write_profiles(
                &tenant(),
                vec![profile_batch(
                    b + i as i64 * NANOS_PER_SEC,
                    "GET /cart",
                    "811",
                    &refs,
                )],
            )
            .await
            .expect("write profiles");
    }
    let p = store.profile(&pq(&[], all_time())).await.expect("profile");
    assert_eq!(p.rows.iter().map(|r| r.samples).sum::<u64>(), expected);
    assert_eq!(
        p.rows.len(),
        77,
        "7 x 11 distinct stacks under one label set"
    );
}

pub async fn builds_and_cost_samples(store: Arc<dyn Store>) {
    let events = workload(3000, 23);
    write_all(&store, &events).await;
    let builds = store
        .builds(&BuildsQuery {
            tenant: tenant(),
            service: "shop".into(),
            range: all_time(),
        })
        .await
        .expect("builds");
    let names: Vec<&str> = builds.iter().map(|b| b.build.as_str()).collect();
    assert_eq!(names, ["811", "812"]);
    for b in &builds {
        let mine: Vec<&RequestEvent> = events.iter().filter(|e| e.build == b.build).collect();
        assert_eq!(b.requests, mine.len() as f64);
        assert_eq!(b.first_seen, mine.iter().map(|e| e.ts).min().unwrap_or(0));
        assert_eq!(b.last_seen, mine.iter().map(|e| e.ts).max().unwrap_or(0));
    }

    let q = CostSamplesQuery {
        tenant: tenant(),
        service: "shop".into(),
        range: all_time(),
        builds: vec!["812".into()],
        endpoint: None,
    };
    let groups = store.cost_samples(&q).await.expect("cost samples");
    let keys: Vec<(&str, &str)> = groups
        .iter()
        .map(|g| (g.endpoint.as_str(), g.build.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("GET /cart/{id}", "812"),
            ("GET /search", "812"),
            ("POST /checkout", "812")
        ]
    );
    for g in &groups {
        let mut want: Vec<(i64, u64, Option<u64>, String, String)> = events
            .iter()
            .filter(|e| e.endpoint == g.endpoint && e.build == g.build)
            .map(|e| (e.ts, e.cpu_ns, e.instructions, e.host.clone(), e.dc.clone()))
            .collect();
        let mut got: Vec<(i64, u64, Option<u64>, String, String)> = g
            .rows
            .iter()
            .map(|r| {
                (
                    r.ts,
                    r.cpu_ns,
                    r.instructions,
                    g.hosts[r.host as usize].clone(),
                    g.dcs[r.dc as usize].clone(),
                )
            })
            .collect();
        want.sort();
        got.sort();
        assert_eq!(got, want, "{} {}", g.endpoint, g.build);
    }
    let one = store
        .cost_samples(&CostSamplesQuery {
            endpoint: Some("GET /search".into()),
            builds: vec![],
            ..q
        })
        .await
        .expect("cost samples");
    assert_eq!(one.len(), 2, "both builds of one endpoint");
}

fn record(id_seed: &str, last_seen: i64, state: RegressionState) -> RegressionRecord {
    RegressionRecord {
        id: format!("id-{id_seed}"),
        tenant: "acme".into(),
        service: "shop".into(),
        endpoint: id_seed.into(),
        metric: "cpu_ns".into(),
        baseline: "811".into(),
        candidate: "812".into(),
        effect: 1.05,
        effect_low: Some(1.03),
        effect_high: Some(1.07),
        ratio_of_means: Some(1.049),
        p_value: 0.0001,
        q_value: 0.0002,
        baseline_median: 1e6,
        candidate_median: 1.05e6,
        baseline_requests: 10_000,
        candidate_requests: 9_000,
        culprits: vec![Culprit {
            function: "cart::load<T>".into(),
            baseline: 1.0,
            candidate: 2.0,
            delta: 1.0,
        }],
        first_seen: last_seen - 10,
        last_seen,
        state,
        updated: last_seen,
        incident: None,
        changed_at: None,
        resolution: None,
        passes_gone: 0,
        kind: profwatch_model::regression::RegressionKind::Cpu,
        function: None,
    }
}

pub async fn regression_records_are_replaced_by_id(store: Arc<dyn Store>) {
    let a = record("GET /a", 100, RegressionState::Open);
    // A record whose interval could not be computed keeps no number for it.
    let b = RegressionRecord {
        effect_low: None,
        effect_high: None,
        ..record("GET /b", 200, RegressionState::Open)
    };
    store.put_regression(&a).await.expect("put");
    store.put_regression(&b).await.expect("put");
    let mut a2 = a.clone();
    a2.state = RegressionState::Acknowledged;
    a2.last_seen = 300;
    a2.updated = 300;
    store.put_regression(&a2).await.expect("put");
    let list = store.regressions(&tenant()).await.expect("list");
    assert_eq!(list.len(), 2, "same id, one record");
    assert_eq!(list[0], a2, "newest last_seen first, latest version");
    assert_eq!(list[1], b);
    assert!(store
        .regressions(&Tenant("globex".into()))
        .await
        .expect("list")
        .is_empty());
}

/// An incident's id, a change point's time, a resolution, the passes a regression has been gone
/// and a function-level record's function are kept with the record and found again.
pub async fn regression_records_keep_their_incident(store: Arc<dyn Store>) {
    use profwatch_model::regression::{Incident, IncidentCause, Resolution};
    let build = IncidentCause::Build("812".into()).id("acme");
    let time = IncidentCause::Time(1_000).id("acme");
    let mut put = Vec::new();
    for (i, endpoint) in ["GET /a", "GET /b", "GET /c"].into_iter().enumerate() {
        put.push(RegressionRecord {
            incident: Some(build.clone()),
            ..record(endpoint, 100 + i as i64, RegressionState::Open)
        });
    }
    put.push(RegressionRecord {
        id: "id-GET /d-window".into(),
        baseline: "before".into(),
        candidate: "after".into(),
        incident: Some(time.clone()),
        changed_at: Some(1_000),
        ..record("GET /d", 50, RegressionState::Open)
    });
    put[0].state = RegressionState::Resolved;
    put[0].resolution = Some(Resolution::Fixed {
        build: "813".into(),
    });
    put[1].passes_gone = 1;
    put[2].function = Some("cart::price<T>".into());
    put[2].metric = "samples".into();
    for r in &put {
        store.put_regression(r).await.expect("put");
    }
    let got = store.regressions(&tenant()).await.expect("list");
    for r in &put {
        assert!(got.contains(r), "{r:?} read back unchanged: {got:#?}");
    }
    let incidents = Incident::group(got);
    assert_eq!(incidents.len(), 2, "{incidents:#?}");
    assert_eq!(incidents[0].id, build);
    assert_eq!(incidents[0].regressions.len(), 3);
    assert_eq!(incidents[1].cause, IncidentCause::Time(1_000));
}

pub async fn idempotency_keys_drop_duplicates(store: Arc<dyn Store>) {
    let batch = workload(200, 29);
    assert_eq!(
        store
            .write_once(&tenant(), "host-1/7/42", batch.clone())
            .await
            .expect("write"),
        Written::Stored
    );
    assert_eq!(
        store
            .write_once(&tenant(), "host-1/7/42", batch.clone())
            .await
            .expect("write"),
        Written::Duplicate
    );
    // Another tenant's key space is its own.
    assert_eq!(
        store
            .write_once(&Tenant("globex".into()), "host-1/7/42", batch.clone())
            .await
            .expect("write"),
        Written::Stored
    );
    assert_eq!(
        store
            .write_once(&tenant(), "host-1/7/43", batch)
            .await
            .expect("write"),
        Written::Stored
    );
    let rows = store
        .endpoints(&eq_query(GroupBy::None))
        .await
        .expect("query");
    assert_eq!(
        rows.iter().map(|r| r.stats.requests).sum::<f64>(),
        400.0,
        "two distinct batches, once each"
    );
}

pub async fn profile_idempotency_keys_drop_duplicates(store: Arc<dyn Store>) {
    let b = base();
    let batch = || vec![profile_batch(b, "GET /k", "812", &[("main;work", 5)])];
    let t = tenant();
    let stored = store
        .write_profiles_once(&t, "profiles/host-1/9", batch())
        .await
        .expect("write");
    assert_eq!(stored, Written::Stored);
    let again = store
        .write_profiles_once(&t, "profiles/host-1/9", batch())
        .await
        .expect("write");
    assert_eq!(again, Written::Duplicate);
    let other = store
        .write_profiles_once(&t, "profiles/host-1/10", batch())
        .await
        .expect("write");
    assert_eq!(other, Written::Stored);
    let profile = store.profile(&pq(&[], all_time())).await.expect("profile");
    let total: u64 = profile.rows.iter().map(|r| r.samples).sum();
    assert_eq!(total, 10, "two distinct profiles, once each");
}

/// Four concurrent retries of one batch with one key (a client that timed out and sent again,
/// through two collectors): it is stored once. A retry may be asked to come back later (429),
/// and then finds the key.
pub async fn concurrent_retries_of_one_batch_store_it_once(store: Arc<dyn Store>) {
    let batch = workload(200, 31);
    let tries: Vec<_> = (0..4)
        .map(|_| {
            let (store, batch) = (store.clone(), batch.clone());
            tokio::spawn(async move {
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                loop {
                    match store
                        .write_once(&tenant(), "host-9/1/1", batch.clone())
                        .await
                    {
                        Err(StoreError::Overloaded { retry_after, .. })
                            if std::time::Instant::now() < deadline =>
                        {
                            tokio::time::sleep(retry_after.min(Duration::from_millis(200))).await
                        }
                        other => return other.expect("write"),
                    }
                }
            })
        })
        .collect();
    let mut stored = 0;
    for t in tries {
        if t.await.expect("join") == Written::Stored {
            stored += 1;
        }
    }
    assert_eq!(stored, 1, "exactly one retry stores the batch");
    let rows = store
        .endpoints(&eq_query(GroupBy::None))
        .await
        .expect("query");
    assert_eq!(rows.iter().map(|r| r.stats.requests).sum::<f64>(), 200.0);
}

/// Per-endpoint series: every endpoint of the service, its buckets in time order, each bucket
/// the events in it.
pub async fn endpoint_series_buckets_every_endpoint(store: Arc<dyn Store>) {
    let events = workload(3000, 17);
    write_all(&store, &events).await;
    let b = base();
    let step = 10 * MINUTE;
    let series = store
        .endpoint_series(&SeriesQuery {
            tenant: tenant(),
            service: "shop".into(),
            range: TimeRange {
                from: b,
                to: b + 30 * MINUTE,
            },
            step,
        })
        .await
        .expect("query");
    let mut endpoints: Vec<&str> = events
        .iter()
        .filter(|e| e.service == "shop" && e.ts >= b && e.ts < b + 30 * MINUTE)
        .map(|e| e.endpoint.as_str())
        .collect();
    endpoints.sort_unstable();
    endpoints.dedup();
    let mut got: Vec<&str> = series.iter().map(|s| s.endpoint.as_str()).collect();
    got.sort_unstable();
    assert_eq!(got, endpoints);
    for s in &series {
        assert!(s.points.windows(2).all(|w| w[0].time < w[1].time), "sorted");
        for p in &s.points {
            let start = p.time * NANOS_PER_SEC;
            let mine: Vec<&RequestEvent> = events
                .iter()
                .filter(|e| {
                    e.service == "shop"
                        && e.endpoint == s.endpoint
                        && e.ts >= start
                        && e.ts < start + step
                })
                .collect();
            assert!(
                !mine.is_empty(),
                "{} bucket {}: no events",
                s.endpoint,
                p.time
            );
            check(
                &p.stats,
                &mine,
                &format!("{} bucket {}", s.endpoint, p.time),
            );
        }
    }
}

/// A lease is held by one holder until it expires; its holder renews it. (The embedded store
/// has one process and grants every request: it only checks what it can.)
pub async fn leases_are_held_by_one_holder(store: Arc<dyn Store>) {
    let ttl = Duration::from_secs(2);
    assert!(store.try_lease("contract", "a", ttl).await.expect("lease"));
    assert!(store.try_lease("contract", "a", ttl).await.expect("renew"));
    if store.kind() == "embedded" {
        return;
    }
    assert!(!store.try_lease("contract", "b", ttl).await.expect("taken"));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if store.try_lease("contract", "b", ttl).await.expect("lease") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(!store.try_lease("contract", "a", ttl).await.expect("taken"));
}
