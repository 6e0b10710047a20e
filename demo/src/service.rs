//! The example shop service the demo runs, one process per simulated host: an axum app whose
//! endpoints each have their own CPU profile, measured by the SDK layer and the stack sampler
//! and reported straight to the server. Build 2 makes `shop::cart::price` do more work, and
//! each worker about 15% heavier in private memory (`hold_memory`).

use std::time::Duration;

use anyhow::Context;
use axum::routing::{get, post};
use axum::Router;
use profwatch_agent::sampler::{Sampler, SamplerConfig};
use profwatch_agent::{Agent, Config, ExportTarget};

/// How one service process runs.
#[derive(Debug, Clone)]
pub struct ServiceArgs {
    pub collector: String,
    pub build: String,
    pub host: String,
    pub dc: String,
    /// Work calibration from the demo (see [`calibrate`]); measured here when absent.
    pub rounds_per_us: Option<u64>,
}

/// Work the compiler cannot remove: `n` rounds of a xorshift from `seed`. A macro, not a
/// function, so that the shop function it is written in is the leaf frame of every sample
/// (an always-inlined function would still be a frame of its own: the sampler reports inlined
/// functions), and its self cost is what the regression analysis compares.
macro_rules! spin {
    ($seed:expr, $n:expr) => {{
        // A plain counter, not a `Range`: in debug builds `Range::next` is a call of its own
        // and would take the samples (and the blame) instead of the shop function.
        let n: u64 = $n;
        let mut x: u64 = ($seed) | 1;
        let mut i = 0;
        while i < n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            i += 1;
        }
        std::hint::black_box(x)
    }};
}

/// About `us` microseconds of CPU.
macro_rules! work {
    ($seed:expr, $us:expr) => {
        spin!(
            $seed,
            ($us) * $crate::service::ROUNDS_PER_US.get().copied().unwrap_or(100)
        )
    };
}

/// Rounds of `spin!` per microsecond on this machine (and build profile), measured at start
/// so that the work per request is about the same in debug and release builds.
static ROUNDS_PER_US: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// Rounds of `spin!` per microsecond of CPU here: the best of a few tries, so that every host
/// of the demo (given the same figure by the demo) does the same work per request.
pub fn calibrate() -> u64 {
    let n = 2_000_000;
    (0..5)
        .map(|_| {
            let t = std::time::Instant::now();
            spin!(1u64, n);
            n / (t.elapsed().as_micros().max(1) as u64)
        })
        .max()
        .unwrap_or(100)
        .max(1)
}

/// The shop's functions, each a distinct frame in the profiles.
pub mod shop {
    pub mod cart {
        /// Loads the cart.
        #[inline(never)]
        pub fn load(id: u64) -> u64 {
            work!(id, 450)
        }

        /// Prices the cart: a fifth of the endpoint's CPU; build 2 does 40% more work here,
        /// which makes the whole request 8% dearer.
        #[inline(never)]
        pub fn price(id: u64, build2: bool) -> u64 {
            work!(id ^ 7, if build2 { 280 } else { 200 })
        }

        /// Renders the cart.
        #[inline(never)]
        pub fn render(id: u64) -> u64 {
            work!(id ^ 11, 350)
        }

        /// `GET /cart/{id}`: the endpoint's function, the caller of the three above in the
        /// flame graph.
        #[inline(never)]
        pub fn get_cart(id: u64, build2: bool) -> u64 {
            load(id) ^ price(id, build2) ^ render(id)
        }
    }

    pub mod search {
        /// Ranks results.
        #[inline(never)]
        pub fn rank(q: u64) -> u64 {
            work!(q, 900)
        }
    }

    pub mod checkout {
        /// Computes tax.
        #[inline(never)]
        pub fn tax(n: u64) -> u64 {
            work!(n, 250)
        }

        /// Scores fraud risk.
        #[inline(never)]
        pub fn fraud(n: u64) -> u64 {
            work!(n ^ 3, 550)
        }

        /// `POST /checkout`: the endpoint's function.
        #[inline(never)]
        pub fn post_checkout() -> u64 {
            tax(5) ^ fraud(9)
        }
    }
}

/// The catalogue every worker keeps in memory (written, so private and resident).
const CATALOGUE_BYTES: usize = 48 << 20;

/// Keeps the worker's memory: the catalogue, and in build 2 a price cache that a thread tops
/// up to 15% of the rest of the worker's private memory (read from its own smaps), so that a
/// worker of build 2 holds about 15% more private memory than one of build 1 whatever the
/// runtime itself holds.
fn hold_memory(build2: bool) {
    let catalogue = vec![1u8; CATALOGUE_BYTES];
    let own = |proc: &std::path::Path| {
        profwatch_sidecar::memory::smaps::read(proc, std::process::id())
            .ok()
            .map(|(bytes, _)| bytes.private() as usize)
    };
    let spawned = std::thread::Builder::new()
        .name("shop-memory".into())
        .spawn(move || {
            let _catalogue = std::hint::black_box(catalogue);
            let mut cache: Vec<Vec<u8>> = Vec::new();
            let mut held = 0usize;
            loop {
                if build2 {
                    if let Some(private) = own(std::path::Path::new("/proc")) {
                        let want = private.saturating_sub(held) * 15 / 100;
                        if want > held + (64 << 10) {
                            let chunk = vec![1u8; want - held];
                            held += chunk.len();
                            cache.push(std::hint::black_box(chunk));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
    if let Err(e) = spawned {
        eprintln!("demo service: no memory thread: {e}");
    }
}

/// Runs the service until killed. Prints `listening on http://ADDR` when ready.
pub async fn run(args: ServiceArgs) -> anyhow::Result<()> {
    let _ = ROUNDS_PER_US.set(args.rounds_per_us.unwrap_or_else(calibrate));
    let mut cfg = Config::new(crate::SERVICE);
    cfg.build = args.build.clone();
    cfg.host = args.host.clone();
    cfg.dc = args.dc.clone();
    cfg.export = ExportTarget::Collector {
        url: args.collector.clone(),
        format: profwatch_agent::export::WireFormat::Protobuf,
        token: None,
    };
    cfg.flush_interval = Duration::from_millis(500);
    let agent = Agent::new(cfg.clone()).context("starting the SDK")?;
    let mut sampler_cfg = SamplerConfig::default();
    sampler_cfg.export_interval = Duration::from_secs(5);
    let _sampler = match Sampler::start(&cfg, sampler_cfg) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("demo service {}: running without stacks: {e}", args.host);
            None
        }
    };
    let build2 = args.build == "2";
    hold_memory(build2);
    let app = Router::new()
        .route(
            "/cart/{id}",
            get(
                move |axum::extract::Path(id): axum::extract::Path<u64>| async move {
                    format!("{}", shop::cart::get_cart(id, build2))
                },
            ),
        )
        .route(
            "/search",
            get(|| async { format!("{}", shop::search::rank(42)) }),
        )
        .route(
            "/checkout",
            post(|| async { format!("{}", shop::checkout::post_checkout()) }),
        )
        .layer(agent.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
