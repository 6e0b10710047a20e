//! The simulated apps: one thread per host writing NDJSON events to its sidecar's Unix socket
//! at a fixed rate, paced in 10 ms steps.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;

/// Feed threads running at one rate; [`Feeds::stop`] ends them.
#[derive(Debug)]
pub struct Feeds {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl Feeds {
    /// One thread per socket, each writing `rate` events/s and adding each event written to
    /// `sent`. `seed` varies the events between steps.
    pub fn start(sockets: &[PathBuf], rate: u64, seed: u64, sent: &Arc<AtomicU64>) -> Feeds {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = sockets
            .iter()
            .enumerate()
            .map(|(h, socket)| {
                let (socket, stop, sent) = (socket.clone(), stop.clone(), sent.clone());
                let seed = seed.wrapping_mul(7919).wrapping_add(h as u64 * 1_000_003);
                std::thread::spawn(move || feed(seed, &socket, rate, &stop, &sent))
            })
            .collect();
        Feeds { stop, threads }
    }

    /// Stops every thread and reports the first error any of them met.
    pub fn stop(self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        let mut errors = Vec::new();
        for t in self.threads {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(format!("{e:#}")),
                Err(_) => errors.push("a feed thread panicked".to_owned()),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("feeding the sidecars failed: {}", errors.join("; "))
        }
    }
}

/// Writes `rate` events/s as NDJSON to the sidecar's socket until `stop`, paced in 10 ms
/// steps, counting every event written.
fn feed(
    mut seq: u64,
    socket: &Path,
    rate: u64,
    stop: &AtomicBool,
    sent: &AtomicU64,
) -> anyhow::Result<()> {
    let mut stream = std::io::BufWriter::with_capacity(
        1 << 16,
        UnixStream::connect(socket)
            .with_context(|| format!("connecting to {}", socket.display()))?,
    );
    let started = Instant::now();
    let mut written = 0u64;
    let mut line = String::with_capacity(256);
    while !stop.load(Ordering::Relaxed) {
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        while written < due {
            seq = seq
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let endpoint = (seq >> 33) % 50;
            let cpu = 200_000 + (seq >> 40) % 2_000_000;
            line.clear();
            use std::fmt::Write as _;
            let _ = writeln!(
                line,
                r#"{{"ts":{},"service":"load","endpoint":"GET /e{endpoint}","build":"100","status":200,"cpu_ns":{cpu},"wall_ns":{}}}"#,
                profwatch_model::timefmt::now_ns(),
                cpu * 3
            );
            stream
                .write_all(line.as_bytes())
                .with_context(|| format!("writing to {}", socket.display()))?;
            written += 1;
            sent.fetch_add(1, Ordering::Relaxed);
        }
        stream.flush().context("flushing the socket")?;
        std::thread::sleep(Duration::from_millis(10));
    }
    stream.flush().context("flushing the socket")?;
    Ok(())
}
