//! Memory samples in the contract: per-process means by group and per bucket, computed here
//! by hand from the samples written, tenants and services kept apart, the range half-open,
//! and idempotency keys.

use std::sync::Arc;

use profwatch_model::memory::{
    MemoryBytes, MemoryGroupBy, MemoryPoint, MemoryQuery, MemoryRow, MemorySample, ProcessMemory,
};
use profwatch_model::query::TimeRange;
use profwatch_model::timefmt::NANOS_PER_SEC;
use profwatch_model::Tenant;
use profwatch_store::{Store, Written};

use crate::suite::{base, tenant};

const KIB: u64 = 1024;
const MINUTE: i64 = 60 * NANOS_PER_SEC;
const SHARED: u64 = 50 * KIB;

/// A sample whose private bytes are `private` KiB, with 50 KiB shared (half of it in PSS).
fn sample(ts: i64, build: &str, host: &str, pid: u32, private: u64) -> MemorySample {
    MemorySample {
        ts,
        service: "shop".into(),
        build: build.into(),
        dc: "eu1".into(),
        host: host.into(),
        pid,
        bytes: MemoryBytes {
            rss: private * KIB + SHARED,
            pss: private * KIB + SHARED / 2,
            shared_clean: SHARED - 10 * KIB,
            shared_dirty: 10 * KIB,
            private_clean: KIB,
            private_dirty: private * KIB - KIB,
            swap: 8 * KIB,
        },
    }
}

/// Three processes: (h1, 1) of build b1 sampled at 100 and 200 KiB, (h2, 2) of b1 at 300,
/// (h2, 1) of b2 at 1000, 1000, 1600: same pid as the first, another host, another process.
fn samples(b: i64) -> Vec<MemorySample> {
    vec![
        sample(b, "b1", "h1", 1, 100),
        sample(b + MINUTE, "b1", "h1", 1, 200),
        sample(b + 10 * NANOS_PER_SEC, "b1", "h2", 2, 300),
        sample(b, "b2", "h2", 1, 1000),
        sample(b + MINUTE, "b2", "h2", 1, 1000),
        sample(b + 2 * MINUTE, "b2", "h2", 1, 1600),
    ]
}

fn query(group_by: MemoryGroupBy, range: TimeRange) -> MemoryQuery {
    MemoryQuery {
        tenant: tenant(),
        service: "shop".into(),
        range,
        group_by,
    }
}

/// The expected row of `processes` processes whose mean private bytes are `private_kib` KiB.
fn row(group: &str, processes: u64, private_kib: f64) -> MemoryRow {
    let private = private_kib * KIB as f64;
    MemoryRow {
        group: group.into(),
        processes,
        rss_bytes: private + SHARED as f64,
        pss_bytes: private + (SHARED / 2) as f64,
        private_bytes: private,
        shared_bytes: SHARED as f64,
        swap_bytes: (8 * KIB) as f64,
    }
}

fn assert_rows(got: &[MemoryRow], want: &[MemoryRow]) {
    assert_eq!(got.len(), want.len(), "{got:?}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!((&g.group, g.processes), (&w.group, w.processes), "{got:?}");
        for (a, b) in [
            (g.rss_bytes, w.rss_bytes),
            (g.pss_bytes, w.pss_bytes),
            (g.private_bytes, w.private_bytes),
            (g.shared_bytes, w.shared_bytes),
            (g.swap_bytes, w.swap_bytes),
        ] {
            assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{g:?} vs {w:?}");
        }
    }
}

pub async fn memory_means_per_process_by_group(store: Arc<dyn Store>) {
    let b = base();
    let written = store
        .write_memory(&tenant(), None, samples(b))
        .await
        .expect("write");
    assert_eq!(written, Written::Stored);
    // Another tenant's and another service's samples are not the shop's.
    let mut other = sample(b, "b1", "h1", 9, 9000);
    store
        .write_memory(&Tenant("globex".into()), None, vec![other.clone()])
        .await
        .expect("write");
    other.service = "cart".into();
    store
        .write_memory(&tenant(), None, vec![other])
        .await
        .expect("write");

    let all = TimeRange {
        from: b,
        to: b + 3 * MINUTE,
    };
    let none = store
        .memory(&query(MemoryGroupBy::None, all))
        .await
        .expect("none");
    // (150 + 300 + 1200) / 3: each process's mean, then the mean of those.
    assert_rows(&none, &[row("", 3, 550.0)]);
    let builds = store
        .memory(&query(MemoryGroupBy::Build, all))
        .await
        .expect("build");
    assert_rows(&builds, &[row("b1", 2, 225.0), row("b2", 1, 1200.0)]);
    let hosts = store
        .memory(&query(MemoryGroupBy::Host, all))
        .await
        .expect("host");
    assert_rows(&hosts, &[row("h1", 1, 150.0), row("h2", 2, 750.0)]);

    // Half-open: `to` at the last sample leaves it out (b2's mean is then 1000).
    let cut = TimeRange {
        from: b,
        to: b + 2 * MINUTE,
    };
    let builds = store
        .memory(&query(MemoryGroupBy::Build, cut))
        .await
        .expect("build");
    assert_rows(&builds, &[row("b1", 2, 225.0), row("b2", 1, 1000.0)]);
    let empty = TimeRange {
        from: b + 3 * MINUTE,
        to: b + 4 * MINUTE,
    };
    assert!(store
        .memory(&query(MemoryGroupBy::None, empty))
        .await
        .expect("empty")
        .is_empty());
}

pub async fn memory_timeseries_buckets(store: Arc<dyn Store>) {
    let b = base();
    store
        .write_memory(&tenant(), None, samples(b))
        .await
        .expect("write");
    let range = TimeRange {
        from: b,
        to: b + 3 * MINUTE,
    };
    let points = store
        .memory_timeseries(&query(MemoryGroupBy::Build, range), MINUTE)
        .await
        .expect("timeseries");
    let want = [
        (b, row("b1", 2, 200.0)),
        (b, row("b2", 1, 1000.0)),
        (b + MINUTE, row("b1", 1, 200.0)),
        (b + MINUTE, row("b2", 1, 1000.0)),
        (b + 2 * MINUTE, row("b2", 1, 1600.0)),
    ];
    let times: Vec<i64> = points.iter().map(|p: &MemoryPoint| p.time).collect();
    let want_times: Vec<i64> = want.iter().map(|w| w.0 / NANOS_PER_SEC).collect();
    assert_eq!(
        times, want_times,
        "bucket starts in unix seconds: {points:?}"
    );
    let rows: Vec<MemoryRow> = points.into_iter().map(|p| p.row).collect();
    let want: Vec<MemoryRow> = want.into_iter().map(|w| w.1).collect();
    assert_rows(&rows, &want);
}

pub async fn memory_processes_per_bucket(store: Arc<dyn Store>) {
    let b = base();
    store
        .write_memory(&tenant(), None, samples(b))
        .await
        .expect("write");
    let range = TimeRange {
        from: b,
        to: b + 3 * MINUTE,
    };
    let got = store
        .memory_processes(&query(MemoryGroupBy::Host, range), 2 * MINUTE)
        .await
        .expect("processes");
    let unit = |ts: i64, build: &str, host: &str, pid: u32, samples: u64, kib: f64| ProcessMemory {
        ts,
        build: build.into(),
        dc: "eu1".into(),
        host: host.into(),
        pid,
        samples,
        private_bytes: kib * KIB as f64,
        shared_bytes: SHARED as f64,
    };
    // Two-minute buckets: where the base falls in its bucket decides which samples share one
    // (the expected cells are computed the same way); each process keeps its own cells.
    let split = |ts: i64| ts - ts.rem_euclid(2 * MINUTE);
    let mut cells: std::collections::BTreeMap<(i64, &str, &str, u32), (u64, f64)> =
        Default::default();
    for (ts, build, host, pid, kib) in [
        (b, "b1", "h1", 1, 100.0),
        (b + MINUTE, "b1", "h1", 1, 200.0),
        (b + 10 * NANOS_PER_SEC, "b1", "h2", 2, 300.0),
        (b, "b2", "h2", 1, 1000.0),
        (b + MINUTE, "b2", "h2", 1, 1000.0),
        (b + 2 * MINUTE, "b2", "h2", 1, 1600.0),
    ] {
        let c = cells.entry((split(ts), build, host, pid)).or_default();
        c.0 += 1;
        c.1 += kib;
    }
    let mut want = Vec::new();
    for ((ts, build, host, pid), (n, sum)) in cells {
        want.push(unit(ts, build, host, pid, n, sum / n as f64));
    }
    assert_eq!(got.len(), want.len(), "{got:?}");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(
            (g.ts, &g.build, &g.dc, &g.host, g.pid, g.samples),
            (w.ts, &w.build, &w.dc, &w.host, w.pid, w.samples),
            "{got:?}"
        );
        assert!(
            (g.private_bytes - w.private_bytes).abs() < 1e-6,
            "{g:?} vs {w:?}"
        );
        assert!(
            (g.shared_bytes - w.shared_bytes).abs() < 1e-6,
            "{g:?} vs {w:?}"
        );
    }
    assert!(
        store
            .memory_processes(&query(MemoryGroupBy::None, range), 0)
            .await
            .is_err(),
        "a step of 0 is refused"
    );
}

pub async fn memory_services_are_listed_per_tenant(store: Arc<dyn Store>) {
    let b = base();
    let mut cart = sample(b, "b1", "h1", 9, 100);
    cart.service = "cart".into();
    let mut other = sample(b, "b1", "h1", 9, 100);
    other.service = "globex-only".into();
    store
        .write_memory(&tenant(), None, [samples(b), vec![cart]].concat())
        .await
        .expect("write");
    store
        .write_memory(&Tenant("globex".into()), None, vec![other])
        .await
        .expect("write");
    let range = TimeRange {
        from: b,
        to: b + 3 * MINUTE,
    };
    let names = store
        .memory_services(&tenant(), range)
        .await
        .expect("services");
    assert_eq!(names, ["cart", "shop"]);
    let later = TimeRange {
        from: b + 3 * MINUTE,
        to: b + 4 * MINUTE,
    };
    assert!(store
        .memory_services(&tenant(), later)
        .await
        .expect("services")
        .is_empty());
}

pub async fn memory_idempotency_keys_drop_duplicates(store: Arc<dyn Store>) {
    let b = base();
    let batch = vec![sample(b, "b1", "h1", 1, 100)];
    for (key, tenant, want) in [
        ("sidecar-1-7", tenant(), Written::Stored),
        ("sidecar-1-7", tenant(), Written::Duplicate),
        ("sidecar-1-7", Tenant("globex".into()), Written::Stored),
        ("sidecar-1-8", tenant(), Written::Stored),
    ] {
        let got = store
            .write_memory(&tenant, Some(key), batch.clone())
            .await
            .expect("write");
        assert_eq!(got, want, "{key} for {tenant}");
    }
    let range = TimeRange {
        from: b,
        to: b + MINUTE,
    };
    let points = store
        .memory_timeseries(&query(MemoryGroupBy::None, range), MINUTE)
        .await
        .expect("timeseries");
    assert_eq!(points.len(), 1);
    // Two writes of one sample each: the process's mean is still 100 KiB, from 2 samples; a
    // third copy would not change the mean either, so count through a second process.
    let extra = vec![sample(b, "b1", "h1", 2, 400)];
    assert_eq!(
        store
            .write_memory(&tenant(), Some("sidecar-1-9"), extra.clone())
            .await
            .expect("write"),
        Written::Stored
    );
    assert_eq!(
        store
            .write_memory(&tenant(), Some("sidecar-1-9"), extra)
            .await
            .expect("write"),
        Written::Duplicate
    );
    let rows = store
        .memory(&query(MemoryGroupBy::None, range))
        .await
        .expect("rows");
    assert_rows(&rows, &[row("", 2, 250.0)]);
}
