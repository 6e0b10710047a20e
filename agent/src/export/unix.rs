//! The sidecar exporter: NDJSON lines over a Unix stream socket.
//!
//! Protocol (what the sidecar reads): a stream of [`profwatch_model::ndjson`] lines, one
//! event per line, no framing beyond the newline. The connection is opened lazily and
//! reopened after any error.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use profwatch_model::RequestEvent;

use super::{encode, ExportError, Exporter, WireFormat};

/// Writes batches to the sidecar's socket.
#[derive(Debug)]
pub struct UnixSocketExporter {
    path: PathBuf,
    stream: Option<UnixStream>,
    timeout: Duration,
}

impl UnixSocketExporter {
    pub fn new(path: impl AsRef<Path>) -> UnixSocketExporter {
        UnixSocketExporter {
            path: path.as_ref().to_owned(),
            stream: None,
            timeout: Duration::from_secs(5),
        }
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
        let body = encode(events, WireFormat::Ndjson);
        let stream = match self.stream.take() {
            Some(stream) => stream,
            None => {
                let stream = UnixStream::connect(&self.path).map_err(|e| self.io_error(e))?;
                stream
                    .set_write_timeout(Some(self.timeout))
                    .map_err(|e| self.io_error(e))?;
                stream
            }
        };
        let mut stream = stream;
        stream.write_all(&body).map_err(|e| self.io_error(e))?;
        self.stream = Some(stream);
        Ok(())
    }
}
