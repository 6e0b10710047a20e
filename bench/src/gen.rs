//! A deterministic generator of realistic request events, encoded ahead of time as the
//! gzip-compressed protobuf bodies an agent would send.

use std::io::Write;
use std::time::Instant;

use anyhow::Context;
use flate2::write::GzEncoder;
use flate2::Compression;
use profwatch_model::rng::Rng;
use profwatch_model::{wire, Labels, RequestEvent};

/// The shape of the generated fleet.
#[derive(Debug, Clone)]
pub struct Profile {
    pub services: usize,
    pub endpoints_per_service: usize,
    pub builds: usize,
    pub dcs: usize,
    pub hosts: usize,
    /// Events' `ts` spread over `[now - span, now]`.
    pub span_secs: i64,
    pub seed: u64,
}

impl Profile {
    /// 50 services of 20 endpoints (1000 endpoints in all), Zipf-distributed traffic.
    pub fn mixed() -> Profile {
        Profile {
            services: 50,
            endpoints_per_service: 20,
            builds: 5,
            dcs: 3,
            hosts: 50,
            span_secs: 6 * 3600,
            seed: 0x5EED_0FBE,
        }
    }

    /// One service of 1000 endpoints that holds every event.
    pub fn single() -> Profile {
        Profile {
            services: 1,
            endpoints_per_service: 1000,
            ..Profile::mixed()
        }
    }
}

/// One encoded request body.
#[derive(Debug)]
pub struct Batch {
    pub body: Vec<u8>,
    pub events: usize,
}

/// Everything generated, ready to send.
#[derive(Debug)]
pub struct Workload {
    pub batches: Vec<Batch>,
    pub events: u64,
    /// Events per service, index-aligned with `services`.
    pub per_service: Vec<u64>,
    pub services: Vec<String>,
    /// Bytes of protobuf before and after gzip.
    pub raw_bytes: u64,
    pub gzip_bytes: u64,
    /// Smallest and largest `ts`, unix ns.
    pub min_ts: i64,
    pub max_ts: i64,
    pub encode_secs: f64,
}

impl Workload {
    /// The service with the most events and its count.
    pub fn busiest(&self) -> (String, u64) {
        let mut best = 0;
        for (i, n) in self.per_service.iter().enumerate() {
            if *n > self.per_service[best] {
                best = i;
            }
        }
        (
            self.services.get(best).cloned().unwrap_or_default(),
            self.per_service.get(best).copied().unwrap_or(0),
        )
    }
}

/// Cumulative weights of a Zipf-like distribution over `n` items with exponent `s`.
fn zipf_cdf(n: usize, s: f64) -> Vec<f64> {
    let mut acc = 0.0;
    let mut cdf: Vec<f64> = (1..=n)
        .map(|k| {
            acc += 1.0 / (k as f64).powf(s);
            acc
        })
        .collect();
    for c in &mut cdf {
        *c /= acc;
    }
    cdf
}

fn pick(cdf: &[f64], rng: &mut Rng) -> usize {
    let u = rng.uniform();
    cdf.partition_point(|c| *c <= u)
        .min(cdf.len().saturating_sub(1))
}

const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];
const RESOURCES: [&str; 20] = [
    "users",
    "orders",
    "cart",
    "items",
    "payments",
    "invoices",
    "search",
    "sessions",
    "products",
    "reviews",
    "shipments",
    "accounts",
    "coupons",
    "stock",
    "prices",
    "images",
    "feeds",
    "messages",
    "reports",
    "settings",
];
const SUBS: [&str; 10] = [
    "{id}",
    "{id}/details",
    "{id}/history",
    "batch",
    "{id}/items",
    "export",
    "{id}/status",
    "recent",
    "{id}/links",
    "summary",
];

fn endpoint_name(j: usize) -> String {
    let r = RESOURCES[j % RESOURCES.len()];
    let s = SUBS[(j / RESOURCES.len()) % SUBS.len()];
    let version = j / (RESOURCES.len() * SUBS.len()) + 1;
    let m = METHODS[(j / 7) % METHODS.len()];
    format!("{m} /api/v{version}/{r}/{s}")
}

/// Per-endpoint cost model.
#[derive(Debug, Clone)]
struct EndpointModel {
    name: String,
    /// ln of the median CPU time in ns.
    ln_median: f64,
    sigma: f64,
    /// Whether the newest builds regress this endpoint.
    regresses: bool,
}

#[derive(Debug)]
struct Fleet {
    services: Vec<String>,
    service_cdf: Vec<f64>,
    endpoints: Vec<Vec<EndpointModel>>,
    endpoint_cdf: Vec<f64>,
    builds: Vec<String>,
    dcs: Vec<String>,
    /// Host name and index of its dc.
    hosts: Vec<(String, usize)>,
    /// Instructions per ns of CPU on each host (clock × IPC).
    host_ipns: Vec<f64>,
}

impl Fleet {
    fn new(p: &Profile) -> Fleet {
        let mut rng = Rng::new(p.seed);
        let services: Vec<String> = (0..p.services)
            .map(|i| {
                if p.services == 1 {
                    "bench-monolith".to_owned()
                } else {
                    format!("service-{i:02}")
                }
            })
            .collect();
        let (ln_lo, ln_hi) = (20_000f64.ln(), 50_000_000f64.ln());
        let endpoints = (0..p.services)
            .map(|_| {
                (0..p.endpoints_per_service)
                    .map(|j| EndpointModel {
                        name: endpoint_name(j),
                        ln_median: ln_lo + rng.uniform() * (ln_hi - ln_lo),
                        sigma: 0.4 + 0.6 * rng.uniform(),
                        regresses: rng.uniform() < 0.1,
                    })
                    .collect()
            })
            .collect();
        let dcs: Vec<String> = ["eu-west-1", "us-east-1", "ap-south-1"]
            .iter()
            .cycle()
            .take(p.dcs)
            .enumerate()
            .map(|(i, d)| {
                if i < 3 {
                    (*d).to_owned()
                } else {
                    format!("{d}-{i}")
                }
            })
            .collect();
        let hosts = (0..p.hosts)
            .map(|h| (format!("web-{h:03}"), h % p.dcs.max(1)))
            .collect();
        let host_ipns = (0..p.hosts).map(|_| 2.0 + 6.0 * rng.uniform()).collect();
        Fleet {
            service_cdf: zipf_cdf(p.services, 1.0),
            endpoint_cdf: zipf_cdf(p.endpoints_per_service, 0.8),
            services,
            endpoints,
            builds: (0..p.builds)
                .map(|b| format!("2024.11.{}", b + 1))
                .collect(),
            dcs,
            hosts,
            host_ipns,
        }
    }

    fn event(&self, rng: &mut Rng, ts: i64, per_service: &mut [u64]) -> RequestEvent {
        let s = pick(&self.service_cdf, rng);
        per_service[s] += 1;
        let ep = &self.endpoints[s][pick(&self.endpoint_cdf, rng)];
        // Newer builds take more traffic as they roll out.
        let b = (rng.uniform().sqrt() * self.builds.len() as f64) as usize;
        let b = b.min(self.builds.len().saturating_sub(1));
        let h = rng.below(self.hosts.len());
        let (host, dc) = &self.hosts[h];
        let mut ln = ep.ln_median + ep.sigma * rng.normal();
        if ep.regresses {
            ln += 0.04 * b as f64;
        }
        let cpu_ns = ln.exp().clamp(1_000.0, 3.6e12) as u64;
        let instructions = (cpu_ns as f64 * self.host_ipns[h] * (0.9 + 0.2 * rng.uniform())) as u64;
        let wait = -(1.0 - rng.uniform()).ln() * 2.0 * cpu_ns as f64;
        let wall_ns = (cpu_ns as f64 + wait).min(8.64e13) as u64;
        let r = rng.uniform();
        let status = if r < 0.97 {
            200
        } else if r < 0.99 {
            404
        } else {
            500
        };
        let mut labels = Labels::new();
        if rng.uniform() < 0.1 {
            labels.insert("flag".to_owned(), "new-cart".to_owned());
        }
        RequestEvent {
            ts,
            service: self.services[s].clone(),
            endpoint: ep.name.clone(),
            build: self.builds[b].clone(),
            dc: self.dcs[*dc].clone(),
            host: host.clone(),
            status,
            cpu_ns,
            instructions: Some(instructions),
            wall_ns,
            weight: 1.0,
            labels,
        }
    }
}

/// Generates `events` events in batches of `batch`, encoded and gzipped, on `threads` threads.
/// `ts` runs from `now - span` to `now` in event order, with up to a second of jitter.
pub fn generate(
    p: &Profile,
    events: u64,
    batch: usize,
    threads: usize,
    now_ns: i64,
) -> anyhow::Result<Workload> {
    anyhow::ensure!(batch > 0, "--batch must be at least 1");
    anyhow::ensure!(
        p.services > 0 && p.endpoints_per_service > 0 && p.builds > 0 && p.dcs > 0 && p.hosts > 0,
        "the profile needs at least one service, endpoint, build, dc and host"
    );
    let started = Instant::now();
    let fleet = Fleet::new(p);
    let n_batches = events.div_ceil(batch as u64) as usize;
    let span_ns = p.span_secs * 1_000_000_000;
    let start_ns = now_ns - span_ns;
    let threads = threads.clamp(1, n_batches.max(1));

    struct Part {
        batches: Vec<(usize, Batch)>,
        per_service: Vec<u64>,
        raw: u64,
        min_ts: i64,
        max_ts: i64,
    }

    let parts: Vec<anyhow::Result<Part>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let fleet = &fleet;
                scope.spawn(move || -> anyhow::Result<Part> {
                    let mut part = Part {
                        batches: Vec::new(),
                        per_service: vec![0; fleet.services.len()],
                        raw: 0,
                        min_ts: i64::MAX,
                        max_ts: i64::MIN,
                    };
                    let mut buf = Vec::with_capacity(batch);
                    for b in (t..n_batches).step_by(threads) {
                        let mut rng =
                            Rng::new(p.seed ^ (b as u64).wrapping_mul(0xA24B_AED4_963E_E407));
                        let first = b as u64 * batch as u64;
                        let last = (first + batch as u64).min(events);
                        buf.clear();
                        for g in first..last {
                            let base =
                                start_ns + (span_ns as f64 * (g as f64 / events as f64)) as i64;
                            let jitter = (rng.uniform() * 1e9) as i64;
                            let ts = (base - jitter).clamp(start_ns, now_ns);
                            part.min_ts = part.min_ts.min(ts);
                            part.max_ts = part.max_ts.max(ts);
                            buf.push(fleet.event(&mut rng, ts, &mut part.per_service));
                        }
                        let raw = wire::encode_batch(&buf);
                        part.raw += raw.len() as u64;
                        let mut gz = GzEncoder::new(
                            Vec::with_capacity(raw.len() / 3),
                            Compression::default(),
                        );
                        gz.write_all(&raw).context("gzip")?;
                        let body = gz.finish().context("gzip")?;
                        part.batches.push((
                            b,
                            Batch {
                                body,
                                events: buf.len(),
                            },
                        ));
                    }
                    Ok(part)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a generator thread panicked")))
            })
            .collect()
    });

    let mut slots: Vec<Option<Batch>> = (0..n_batches).map(|_| None).collect();
    let mut per_service = vec![0u64; fleet.services.len()];
    let (mut raw_bytes, mut min_ts, mut max_ts) = (0u64, i64::MAX, i64::MIN);
    for part in parts {
        let part = part?;
        for (i, n) in part.per_service.iter().enumerate() {
            per_service[i] += n;
        }
        raw_bytes += part.raw;
        min_ts = min_ts.min(part.min_ts);
        max_ts = max_ts.max(part.max_ts);
        for (i, b) in part.batches {
            slots[i] = Some(b);
        }
    }
    let batches: Vec<Batch> = slots.into_iter().flatten().collect();
    anyhow::ensure!(batches.len() == n_batches, "a batch went missing");
    let gzip_bytes = batches.iter().map(|b| b.body.len() as u64).sum();
    Ok(Workload {
        batches,
        events,
        per_service,
        services: fleet.services,
        raw_bytes,
        gzip_bytes,
        min_ts,
        max_ts,
        encode_secs: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use profwatch_model::Limits;

    #[test]
    fn events_are_valid_and_counted() {
        let now = 1_800_000_000_000_000_000;
        let w = generate(&Profile::mixed(), 2_500, 1_000, 2, now).expect("generate");
        assert_eq!(w.batches.len(), 3);
        assert_eq!(w.batches.iter().map(|b| b.events).sum::<usize>(), 2_500);
        assert_eq!(w.per_service.iter().sum::<u64>(), 2_500);
        let fleet = Fleet::new(&Profile::mixed());
        let mut rng = Rng::new(1);
        let mut per = vec![0; 50];
        for _ in 0..1000 {
            let e = fleet.event(&mut rng, now, &mut per);
            e.validate(&Limits::default(), now).expect("valid");
        }
        let (busiest, n) = w.busiest();
        assert_eq!(busiest, "service-00");
        assert!(n > 2_500 / 10);
    }

    #[test]
    fn endpoint_names_are_unique() {
        let names: std::collections::HashSet<_> = (0..1000).map(endpoint_name).collect();
        assert_eq!(names.len(), 1000);
    }
}
