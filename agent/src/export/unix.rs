//! The sidecar exporter: NDJSON lines over a Unix stream socket.
//!
//! Protocol (what the sidecar reads, `agent/PROTOCOL.md`): after each connect, one hello frame
//! ([`Hello`]: this process's pid and the service, build and dc it was configured with, so the
//! sidecar watches its memory), then a stream of [`profwatch_model::ndjson`] lines, one event
//! per line. The connection is opened lazily and reopened after any error; the hello goes out
//! with the first batch on each connection, in the same write.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use profwatch_model::hello::Hello;
use profwatch_model::RequestEvent;

use super::{encode, ExportError, Exporter, WireFormat};

/// Writes batches to the sidecar's socket.
#[derive(Debug)]
pub struct UnixSocketExporter {
    path: PathBuf,
    stream: Option<UnixStream>,
    timeout: Duration,
    /// The hello's labels; its pid is read at each connect (a forked child has its own).
    hello: Hello,
}

impl UnixSocketExporter {
    /// An exporter whose hello carries only the pid (the sidecar labels the process's memory
    /// from its environment or its flags).
    pub fn new(path: impl AsRef<Path>) -> UnixSocketExporter {
        UnixSocketExporter {
            path: path.as_ref().to_owned(),
            stream: None,
            timeout: Duration::from_secs(5),
            hello: Hello::default(),
        }
    }

    /// The labels the hello gives this process's memory samples; an empty one is left out.
    pub fn with_labels(mut self, service: &str, build: &str, dc: &str) -> UnixSocketExporter {
        let set = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        self.hello.service = set(service);
        self.hello.build = set(build);
        self.hello.dc = set(dc);
        self
    }

    fn io_error(&self, source: std::io::Error) -> ExportError {
        ExportError::Io {
            target: format!("sidecar socket {}", self.path.display()),
            source,
        }
    }
}

impl Exporter for UnixSocketExporter {
    fn export(&mut self, events: &[RequestEvent]) -> Result<(), ExportError> {
        let (mut stream, mut out) = match self.stream.take() {
            Some(stream) => (stream, Vec::new()),
            None => {
                let stream = UnixStream::connect(&self.path).map_err(|e| self.io_error(e))?;
                stream
                    .set_write_timeout(Some(self.timeout))
                    .map_err(|e| self.io_error(e))?;
                let hello = Hello {
                    pid: Some(std::process::id()),
                    ..self.hello.clone()
                };
                (stream, hello.frame())
            }
        };
        out.extend_from_slice(&encode(events, WireFormat::Ndjson));
        stream.write_all(&out).map_err(|e| self.io_error(e))?;
        self.stream = Some(stream);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixListener;

    use profwatch_model::hello::HELLO_MARKER;
    use profwatch_model::ndjson;

    fn event() -> RequestEvent {
        RequestEvent {
            ts: profwatch_model::timefmt::now_ns(),
            service: "s".into(),
            endpoint: "GET /".into(),
            build: String::new(),
            dc: String::new(),
            host: String::new(),
            status: 200,
            cpu_ns: 10,
            instructions: None,
            wall_ns: 20,
            weight: 1.0,
            labels: Default::default(),
        }
    }

    /// Reads the hello frame at the start of `bytes`; the bytes after it.
    fn split_hello(bytes: &[u8]) -> (Hello, &[u8]) {
        assert_eq!(bytes.first(), Some(&HELLO_MARKER), "{bytes:?}");
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        let hello = Hello::parse(&bytes[5..5 + len]).expect("a hello the sidecar accepts");
        (hello, &bytes[5 + len..])
    }

    #[test]
    fn each_connection_starts_with_a_hello_carrying_this_process_s_pid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let mut exporter = UnixSocketExporter::new(&path).with_labels("checkout", "812", "");
        exporter.export(&[event()]).expect("export");
        exporter.export(&[event()]).expect("export");
        let (mut conn, _) = listener.accept().expect("accept");
        drop(exporter);
        let mut got = Vec::new();
        conn.read_to_end(&mut got).expect("read");
        let (hello, rest) = split_hello(&got);
        assert_eq!(
            hello,
            Hello {
                pid: Some(std::process::id()),
                service: Some("checkout".into()),
                build: Some("812".into()),
                dc: None,
            }
        );
        let lines: Vec<&str> = std::str::from_utf8(rest).expect("utf-8").lines().collect();
        assert_eq!(lines.len(), 2, "one hello per connection, then the events");
        for line in lines {
            ndjson::parse_event(line, profwatch_model::timefmt::now_ns()).expect("an event");
        }

        // A new connection (the sidecar restarted) says hello again.
        drop(conn);
        let mut exporter = UnixSocketExporter::new(&path);
        exporter.export(&[event()]).expect("export");
        let (mut conn, _) = listener.accept().expect("accept");
        drop(exporter);
        let mut got = Vec::new();
        conn.read_to_end(&mut got).expect("read");
        let (hello, _) = split_hello(&got);
        assert_eq!(hello.pid, Some(std::process::id()));
        assert_eq!(hello.service, None);
    }
}
