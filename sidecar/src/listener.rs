//! The local listeners: a Unix stream socket and, optionally, UDP on loopback.
//!
//! Protocol (see `agent/PROTOCOL.md`): on the stream, each message is either a JSON line (any
//! first byte but `0x00`, `0x01` and `0x02`, ending with `\n`) or a frame: a marker byte, a
//! big-endian u32 length, and that many bytes: after `0x00` a protobuf `profwatch.v1.EventBatch`,
//! after `0x01` a profile ([`super::relay`]), after `0x02` a hello ([`Hello`]: the process
//! registers itself for the memory watch). A datagram is one or more JSON lines, or a marker
//! followed by one frame's bytes (the datagram bounds it; no length); a hello datagram is
//! refused (`hello_over_udp`): only the socket tells who sent it.
//!
//! Invariants: bad input never stops a connection or the listener, and never takes the events
//! beside it down: each line, frame or event is refused on its own, counted by reason and
//! logged (rate-limited). Every accepted event has been enriched and passed
//! `RequestEvent::validate`, so the collector will not refuse a batch for one of them. A line
//! longer than `max_line_bytes` is skipped up to its newline; an oversize frame is skipped by
//! its length; a line or frame cut by the end of its connection is dropped (`truncated`).
//! Every accepted profile has passed the collector's checks ([`super::relay::parse`]). A hello
//! is at most [`MAX_HELLO_BYTES`]; its pid is the connection's peer credentials' (`SO_PEERCRED`,
//! which the peer cannot forge), never the pid it claims; the listener hands it to the memory
//! watch without waiting ([`Registrar::hello`]).
//! Memory per connection is bounded by `max(max_line_bytes, max_frame_bytes)` plus one read.

use std::io;
use std::path::Path;
use std::sync::Arc;

use profwatch_model::hello::{Hello, HELLO_MARKER, MAX_HELLO_BYTES};
use profwatch_model::ndjson::EventErrorKind;
use profwatch_model::timefmt::now_ns;
use profwatch_model::{ndjson, wire, Limits, RequestEvent};
use tokio::io::AsyncReadExt;
use tokio::net::{UdpSocket, UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};

use super::batcher::Input;
use super::enrich::Enricher;
use super::error::SidecarError;
use super::memory::Registrar;
use super::metrics::{Metrics, RejectReason};
use super::relay::{self, Relayed};

/// The byte that starts a protobuf frame (never the first byte of a JSON text).
pub const FRAME_MARKER: u8 = 0x00;
/// The byte that starts a profile frame (never the first byte of a JSON text either).
pub const PROFILE_MARKER: u8 = 0x01;
/// Read size per connection.
const READ_CHUNK: usize = 64 << 10;
/// Events handed to the batcher at most per message (bounds latency under load).
const CHUNK_EVENTS: usize = 1024;
/// Profiles gathered at most from queued datagrams before they are handed over.
const CHUNK_PROFILES: usize = 64;

/// What local input turned into: validated, enriched events and profiles, and well-formed
/// hellos (not yet tied to their sender).
#[derive(Debug, Default)]
pub struct Accepted {
    pub events: Vec<RequestEvent>,
    pub profiles: Vec<Relayed>,
    pub hellos: Vec<Hello>,
}

impl Accepted {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.profiles.is_empty()
    }
}

/// Turns local input into validated, enriched events and profiles.
#[derive(Debug)]
pub struct Ingest {
    pub enricher: Enricher,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    pub max_line_bytes: usize,
    pub max_frame_bytes: usize,
}

impl Ingest {
    /// One JSON line (without its newline). Blank lines are ignored.
    pub fn line(&self, raw: &[u8], now: i64, out: &mut Accepted) {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let Ok(text) = std::str::from_utf8(raw) else {
            self.metrics
                .reject(RejectReason::BadUtf8, &"a line is not valid UTF-8");
            return;
        };
        match ndjson::parse_event(text, now) {
            Ok(event) => self.accept(event, now, out),
            Err(e) => {
                let reason = match e.kind {
                    EventErrorKind::MissingField => RejectReason::MissingField,
                    EventErrorKind::UnknownField | EventErrorKind::Tenant => {
                        RejectReason::UnknownField
                    }
                    _ => RejectReason::BadJson,
                };
                self.metrics.reject(reason, &e.message);
            }
        }
    }

    /// One protobuf `EventBatch`.
    pub fn frame(&self, bytes: &[u8], now: i64, out: &mut Accepted) {
        match wire::decode_batch(bytes) {
            Ok(events) => {
                for event in events {
                    self.accept(event, now, out);
                }
            }
            Err(e) => self.metrics.reject(RejectReason::BadFrame, &e),
        }
    }

    /// One profile frame's payload.
    pub fn profile(&self, bytes: &[u8], now: i64, out: &mut Accepted) {
        match relay::parse(bytes, &self.limits, now) {
            Ok(mut relayed) => {
                self.enricher.apply_profile(&mut relayed.profile.labels);
                match relay::check(&relayed.profile.labels, &self.limits) {
                    Ok(()) => out.profiles.push(relayed),
                    Err(e) => self.metrics.reject(RejectReason::BadProfile, &e),
                }
            }
            Err(e) => self.metrics.reject(RejectReason::BadProfile, &e),
        }
    }

    /// One hello frame's payload.
    pub fn hello(&self, bytes: &[u8], out: &mut Accepted) {
        match Hello::parse(bytes) {
            Ok(hello) => out.hellos.push(hello),
            Err(e) => self.metrics.reject(RejectReason::BadHello, &e),
        }
    }

    /// One frame after its marker: an `EventBatch`, a profile or a hello.
    fn framed(&self, marker: u8, bytes: &[u8], now: i64, out: &mut Accepted) {
        match marker {
            PROFILE_MARKER => self.profile(bytes, now, out),
            HELLO_MARKER => self.hello(bytes, out),
            _ => self.frame(bytes, now, out),
        }
    }

    fn accept(&self, mut event: RequestEvent, now: i64, out: &mut Accepted) {
        self.enricher.apply(&mut event);
        match event.validate(&self.limits, now) {
            Ok(()) => out.events.push(event),
            Err(e) => self.metrics.reject(RejectReason::Invalid, &e),
        }
    }

    /// One UDP datagram.
    pub fn datagram(&self, data: &[u8], now: i64, out: &mut Accepted) {
        if data.first() == Some(&HELLO_MARKER) {
            self.metrics.reject(
                RejectReason::HelloOverUdp,
                &"a hello datagram (UDP tells no sender pid): register over the socket, or use --memory-name",
            );
            return;
        }
        if let Some((&marker, frame)) = data
            .split_first()
            .filter(|(m, _)| matches!(**m, FRAME_MARKER | PROFILE_MARKER))
        {
            if frame.len() > self.max_frame_bytes {
                self.metrics
                    .reject(RejectReason::FrameTooLarge, &"an oversize datagram frame");
            } else {
                self.framed(marker, frame, now, out);
            }
            return;
        }
        for line in data.split(|b| *b == b'\n') {
            if line.len() > self.max_line_bytes {
                self.metrics.reject(
                    RejectReason::TooLong,
                    &format_args!("a {}-byte line in a datagram", line.len()),
                );
            } else {
                self.line(line, now, out);
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    Nothing,
    /// The rest of an oversize line, up to and including its newline.
    Line,
    /// The rest of an oversize frame.
    Bytes(usize),
}

/// Splits a byte stream into lines and frames; holds at most one incomplete message.
#[derive(Debug)]
pub struct StreamDecoder {
    buf: Vec<u8>,
    skip: Skip,
}

impl Default for StreamDecoder {
    fn default() -> Self {
        StreamDecoder {
            buf: Vec::with_capacity(READ_CHUNK),
            skip: Skip::Nothing,
        }
    }
}

impl StreamDecoder {
    /// Feeds bytes read from the connection; complete messages become events in `out`.
    pub fn feed(&mut self, data: &[u8], ingest: &Ingest, out: &mut Accepted) {
        self.buf.extend_from_slice(data);
        let now = now_ns();
        let buf = &self.buf;
        let len = buf.len();
        let mut pos = 0;
        loop {
            match self.skip {
                Skip::Nothing => {}
                Skip::Line => match buf[pos..].iter().position(|b| *b == b'\n') {
                    Some(i) => {
                        pos += i + 1;
                        self.skip = Skip::Nothing;
                    }
                    None => {
                        pos = len;
                        break;
                    }
                },
                Skip::Bytes(n) => {
                    let k = n.min(len - pos);
                    pos += k;
                    if k < n {
                        self.skip = Skip::Bytes(n - k);
                        break;
                    }
                    self.skip = Skip::Nothing;
                }
            }
            if pos == len {
                break;
            }
            let marker = buf[pos];
            if matches!(marker, FRAME_MARKER | PROFILE_MARKER | HELLO_MARKER) {
                let Some(head) = buf.get(pos + 1..pos + 5) else {
                    break;
                };
                let n = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
                if marker == HELLO_MARKER && n > MAX_HELLO_BYTES {
                    ingest.metrics.reject(
                        RejectReason::BadHello,
                        &format_args!("a {n}-byte hello; the limit is {MAX_HELLO_BYTES}"),
                    );
                    pos += 5;
                    self.skip = Skip::Bytes(n);
                    continue;
                }
                if n > ingest.max_frame_bytes {
                    ingest.metrics.reject(
                        RejectReason::FrameTooLarge,
                        &format_args!("a {n}-byte frame; the limit is {}", ingest.max_frame_bytes),
                    );
                    pos += 5;
                    self.skip = Skip::Bytes(n);
                    continue;
                }
                let Some(frame) = buf.get(pos + 5..pos + 5 + n) else {
                    break;
                };
                ingest.framed(marker, frame, now, out);
                pos += 5 + n;
                continue;
            }
            let window = (len - pos).min(ingest.max_line_bytes + 1);
            match buf[pos..pos + window].iter().position(|b| *b == b'\n') {
                Some(i) => {
                    ingest.line(&buf[pos..pos + i], now, out);
                    pos += i + 1;
                }
                None if window > ingest.max_line_bytes => {
                    ingest.metrics.reject(
                        RejectReason::TooLong,
                        &format_args!("a line over {} bytes", ingest.max_line_bytes),
                    );
                    pos += window;
                    self.skip = Skip::Line;
                }
                None => break,
            }
        }
        self.buf.drain(..pos);
    }

    /// The connection ended: an incomplete message is refused.
    pub fn finish(&mut self, ingest: &Ingest) {
        if !self.buf.is_empty() && self.skip == Skip::Nothing {
            ingest.metrics.reject(
                RejectReason::Truncated,
                &format_args!(
                    "{} bytes cut short by the end of the connection",
                    self.buf.len()
                ),
            );
        }
        self.buf.clear();
        self.skip = Skip::Nothing;
    }
}

/// Binds the Unix socket, replacing a stale socket file (never another kind of file), with
/// permissions `mode` and group `group`. The socket is bound under a temporary name, given
/// its mode and group, then renamed into place: at `path` it never has the wrong ones.
pub fn bind_unix(path: &Path, mode: u32, group: Option<u32>) -> Result<UnixListener, SidecarError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let err = |source| SidecarError::Listen {
        what: "unix socket",
        addr: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path).map_err(err)?,
        Ok(_) => {
            return Err(err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            )))
        }
        Err(_) => {}
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(err)?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .and_then(|()| match group {
            Some(gid) => std::os::unix::fs::chown(&tmp, None, Some(gid)),
            None => Ok(()),
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(listener)
}

/// Accepts connections until `stop` turns true; each connection runs in its own task.
/// Hellos go to `registrar`.
pub async fn serve_unix(
    listener: UnixListener,
    ingest: Arc<Ingest>,
    tx: mpsc::Sender<Input>,
    registrar: Registrar,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let peer = match stream.peer_cred() {
                        Ok(c) => {
                            ingest.metrics.peer_connected(c.pid(), c.uid(), c.gid());
                            c.pid()
                        }
                        Err(e) => {
                            tracing::debug!("no peer credentials: {e}");
                            None
                        }
                    };
                    let from = Peer { pid: peer, registrar: registrar.clone() };
                    tokio::spawn(connection(stream, from, ingest.clone(), tx.clone(), stop.clone()));
                }
                Err(e) => {
                    tracing::warn!("unix socket accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => return,
        }
    }
}

/// Who is at the other end of a connection, and where its hellos go.
struct Peer {
    /// From the socket's credentials.
    pid: Option<i32>,
    registrar: Registrar,
}

async fn connection(
    mut stream: UnixStream,
    peer: Peer,
    ingest: Arc<Ingest>,
    tx: mpsc::Sender<Input>,
    mut stop: watch::Receiver<bool>,
) {
    let mut decoder = StreamDecoder::default();
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut out = Accepted::default();
    loop {
        let n = tokio::select! {
            read = stream.read(&mut chunk) => match read {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!("unix socket read failed: {e}");
                    break;
                }
            },
            _ = stop.changed() => break,
        };
        decoder.feed(&chunk[..n], &ingest, &mut out);
        for hello in out.hellos.drain(..) {
            peer.registrar.hello(peer.pid, hello);
        }
        if !out.is_empty() && !hand_over(&ingest, &tx, &mut out).await {
            return;
        }
    }
    decoder.finish(&ingest);
}

/// Sends accepted events and profiles to the batcher (waiting when it is busy: backpressure,
/// not loss).
async fn hand_over(ingest: &Ingest, tx: &mpsc::Sender<Input>, out: &mut Accepted) -> bool {
    let Accepted {
        events, profiles, ..
    } = std::mem::take(out);
    if !events.is_empty() {
        ingest.metrics.received(events.len());
        if tx.send(Input::Events(events)).await.is_err() {
            return false;
        }
    }
    ingest.metrics.profiles_received(profiles.len());
    for Relayed {
        profile,
        frequency_hz,
    } in profiles
    {
        let input = Input::Profile {
            profile,
            frequency_hz,
        };
        if tx.send(input).await.is_err() {
            return false;
        }
    }
    true
}

/// Binds the UDP socket.
pub async fn bind_udp(addr: std::net::SocketAddr) -> Result<UdpSocket, SidecarError> {
    UdpSocket::bind(addr)
        .await
        .map_err(|source| SidecarError::Listen {
            what: "udp",
            addr: addr.to_string(),
            source,
        })
}

/// Reads datagrams until `stop` turns true, handing events over in chunks.
pub async fn serve_udp(
    socket: UdpSocket,
    ingest: Arc<Ingest>,
    tx: mpsc::Sender<Input>,
    mut stop: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 65_536];
    let mut out = Accepted::default();
    loop {
        tokio::select! {
            got = socket.recv_from(&mut buf) => match got {
                Ok((n, _)) => ingest.datagram(&buf[..n], now_ns(), &mut out),
                Err(e) => {
                    tracing::debug!("udp receive failed: {e}");
                    continue;
                }
            },
            _ = stop.changed() => return,
        }
        while out.events.len() < CHUNK_EVENTS && out.profiles.len() < CHUNK_PROFILES {
            match socket.try_recv_from(&mut buf) {
                Ok((n, _)) => ingest.datagram(&buf[..n], now_ns(), &mut out),
                Err(_) => break,
            }
        }
        if !out.is_empty() && !hand_over(&ingest, &tx, &mut out).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingest() -> Ingest {
        Ingest {
            enricher: Enricher::new("h", Some("dc"), false),
            limits: Limits::default(),
            metrics: Arc::new(Metrics::new()),
            max_line_bytes: 200,
            max_frame_bytes: 1000,
        }
    }

    fn line(build: &str) -> String {
        format!("{{\"service\":\"s\",\"endpoint\":\"GET /\",\"cpu_ns\":5,\"build\":\"{build}\"}}\n")
    }

    fn frame(builds: &[&str]) -> Vec<u8> {
        let events: Vec<RequestEvent> = builds
            .iter()
            .map(|b| {
                let mut e = ndjson::parse_event(line(b).trim(), now_ns()).expect("event");
                e.build = (*b).to_owned();
                e
            })
            .collect();
        let body = wire::encode_batch(&events);
        let mut out = vec![FRAME_MARKER];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn profile_frame(service: &str) -> Vec<u8> {
        let body = format!("sample_rate=99&service={service}\nmain;work 2\n");
        let mut out = vec![PROFILE_MARKER];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(body.as_bytes());
        out
    }

    fn builds(out: &Accepted) -> Vec<&str> {
        out.events.iter().map(|e| e.build.as_str()).collect()
    }

    fn services(out: &Accepted) -> Vec<&str> {
        out.profiles
            .iter()
            .map(|p| p.profile.labels.service.as_str())
            .collect()
    }

    #[test]
    fn lines_and_frames_interleave_across_any_split() {
        let mut stream = Vec::new();
        stream.extend_from_slice(line("a").as_bytes());
        stream.extend_from_slice(&frame(&["b", "c"]));
        stream.extend_from_slice(&profile_frame("p1"));
        stream.extend_from_slice(b"\r\n  \n");
        stream.extend_from_slice(line("d").as_bytes());
        stream.extend_from_slice(&profile_frame("p2"));
        for step in [1, 2, 3, 7, 64, stream.len()] {
            let ing = ingest();
            let mut dec = StreamDecoder::default();
            let mut out = Accepted::default();
            for piece in stream.chunks(step) {
                dec.feed(piece, &ing, &mut out);
            }
            dec.finish(&ing);
            assert_eq!(builds(&out), ["a", "b", "c", "d"], "step {step}");
            assert_eq!(out.events[0].host, "h");
            assert_eq!(services(&out), ["p1", "p2"], "step {step}");
            let p = &out.profiles[0];
            assert_eq!(
                (p.profile.labels.host.as_str(), p.profile.labels.dc.as_str()),
                ("h", "dc")
            );
            assert_eq!((p.frequency_hz, p.profile.samples[0].samples), (99, 2));
            assert_eq!(
                ing.metrics
                    .snapshot("", "")
                    .rejected
                    .iter()
                    .map(|r| r.1)
                    .sum::<u64>(),
                0
            );
        }
    }

    #[test]
    fn bad_input_is_refused_alone() {
        let ing = ingest();
        let mut stream = Vec::new();
        stream.extend_from_slice(line("a").as_bytes());
        stream.extend_from_slice(b"{not json\n");
        stream.extend_from_slice(b"{\"service\":\"s\"}\n");
        stream.extend_from_slice(
            b"{\"service\":\"s\",\"endpoint\":\"e\",\"cpu_ns\":1,\"tenant\":\"t\"}\n",
        );
        stream.extend_from_slice(b"\xff\xfe\n");
        stream.extend_from_slice(format!("{}\n", "x".repeat(5000)).as_bytes());
        stream.extend_from_slice(b"{\"service\":\"\",\"endpoint\":\"e\",\"cpu_ns\":1}\n");
        stream.extend_from_slice(&[FRAME_MARKER, 0, 0, 0, 4, 0x0a, 0xff, 0xff, 0xff]);
        stream.extend_from_slice(&[FRAME_MARKER, 0, 0, 0x10, 0]);
        stream.extend_from_slice(&[b'z'; 0x1000]);
        let bad_profile = b"sample_rate=99\nmain 1\n";
        stream.push(PROFILE_MARKER);
        stream.extend_from_slice(&(bad_profile.len() as u32).to_be_bytes());
        stream.extend_from_slice(bad_profile);
        stream.extend_from_slice(&hello_frame(br#"{"service":"a\u0007"}"#));
        stream.extend_from_slice(line("b").as_bytes());
        stream.extend_from_slice(b"{\"service\":");
        let mut dec = StreamDecoder::default();
        let mut out = Accepted::default();
        for piece in stream.chunks(100) {
            dec.feed(piece, &ing, &mut out);
        }
        dec.finish(&ing);
        assert_eq!(builds(&out), ["a", "b"]);
        assert!(out.profiles.is_empty() && out.hellos.is_empty());
        for reason in RejectReason::ALL {
            let want = u64::from(reason != RejectReason::HelloOverUdp);
            assert_eq!(ing.metrics.rejected_count(reason), want, "{reason:?}");
        }
    }

    fn hello_frame(payload: &[u8]) -> Vec<u8> {
        let mut out = vec![HELLO_MARKER];
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn hellos_are_read_between_other_messages_and_bad_ones_refused() {
        let good = Hello {
            pid: Some(7),
            service: Some("checkout".into()),
            build: Some("812".into()),
            dc: Some("eu1".into()),
        };
        let mut stream = good.frame();
        stream.extend_from_slice(line("a").as_bytes());
        stream.extend_from_slice(&hello_frame(b"{not json"));
        stream.extend_from_slice(&hello_frame(br#"{"build":"9","future_field":true}"#));
        let huge = format!(r#"{{"service":"{}"}}"#, "s".repeat(MAX_HELLO_BYTES));
        stream.extend_from_slice(&hello_frame(huge.as_bytes()));
        stream.extend_from_slice(&hello_frame(b"[1]"));
        stream.extend_from_slice(line("b").as_bytes());
        for step in [1, 5, 64, stream.len()] {
            let ing = ingest();
            let mut dec = StreamDecoder::default();
            let mut out = Accepted::default();
            for piece in stream.chunks(step) {
                dec.feed(piece, &ing, &mut out);
            }
            dec.finish(&ing);
            assert_eq!(builds(&out), ["a", "b"], "step {step}");
            assert_eq!(
                out.hellos,
                [
                    good.clone(),
                    Hello {
                        build: Some("9".into()),
                        ..Hello::default()
                    }
                ],
                "step {step}: unknown fields are ignored"
            );
            assert_eq!(
                ing.metrics.rejected_count(RejectReason::BadHello),
                3,
                "step {step}: bad JSON, too long, not an object"
            );
            assert_eq!(ing.metrics.rejected_count(RejectReason::FrameTooLarge), 0);
        }
    }

    #[test]
    fn datagrams() {
        let ing = ingest();
        let mut out = Accepted::default();
        ing.datagram(
            format!("{}{}", line("a"), line("b")).as_bytes(),
            now_ns(),
            &mut out,
        );
        ing.datagram(
            &frame(&["c"])[..1]
                .iter()
                .chain(&frame(&["c"])[5..])
                .copied()
                .collect::<Vec<_>>(),
            now_ns(),
            &mut out,
        );
        ing.datagram(b"garbage", now_ns(), &mut out);
        ing.datagram(line("d").trim().as_bytes(), now_ns(), &mut out);
        let p = profile_frame("p");
        ing.datagram(
            &p[..1].iter().chain(&p[5..]).copied().collect::<Vec<_>>(),
            now_ns(),
            &mut out,
        );
        ing.datagram(
            &Hello {
                pid: Some(1),
                ..Hello::default()
            }
            .frame(),
            now_ns(),
            &mut out,
        );
        assert_eq!(builds(&out), ["a", "b", "c", "d"]);
        assert_eq!(services(&out), ["p"]);
        assert!(out.hellos.is_empty());
        assert_eq!(ing.metrics.rejected_count(RejectReason::BadJson), 1);
        assert_eq!(ing.metrics.rejected_count(RejectReason::HelloOverUdp), 1);
    }
}
