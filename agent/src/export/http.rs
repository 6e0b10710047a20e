//! The direct exporter: `POST {url}/api/v1/events` to the collector over plain HTTP/1.1.
//!
//! A deliberately small client: `http://` URLs only (TLS and the disk spool belong to the
//! sidecar), one connection per batch (`Connection: close`), a timeout on every step. Only
//! the status line is interpreted; a non-2xx answer's body is kept (truncated) as the error
//! message.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use profwatch_model::RequestEvent;

use super::{encode, ExportError, Exporter, WireFormat};
use crate::error::AgentError;

/// A collector's address and credentials, and one `POST` over plain HTTP/1.1: the one sender
/// of the SDK's event exporter and of the sampler's profile sink.
#[derive(Debug, Clone)]
pub(crate) struct CollectorHttp {
    /// `host:port` for connecting and for the `Host` header.
    authority: String,
    /// The URL's base path, without a trailing `/`.
    base: String,
    token: Option<String>,
    timeout: Duration,
}

impl CollectorHttp {
    /// `url` is `http://host[:port][/base]`.
    pub(crate) fn new(url: &str, token: Option<String>) -> Result<CollectorHttp, AgentError> {
        let (authority, base) = collector_address(url, token.as_deref())?;
        Ok(CollectorHttp {
            authority,
            base,
            token,
            timeout: Duration::from_secs(10),
        })
    }

    /// `{base}{path}`, the request target of `path` (which starts with `/`).
    pub(crate) fn target(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends `body` to `target`; `Ok` on a 2xx answer.
    pub(crate) fn post(
        &self,
        target: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<(), ExportError> {
        let describe = || format!("collector http://{}{target}", self.authority);
        let io = |source| ExportError::Io {
            target: describe(),
            source,
        };
        let mut stream = self.connect().map_err(io)?;
        stream
            .set_read_timeout(Some(self.timeout))
            .and_then(|()| stream.set_write_timeout(Some(self.timeout)))
            .map_err(io)?;
        let mut head = format!(
            "POST {target} HTTP/1.1\r\nHost: {}\r\nUser-Agent: profwatch-agent/{}\r\n\
             Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.authority,
            env!("CARGO_PKG_VERSION"),
            body.len(),
        );
        if let Some(token) = &self.token {
            head.push_str("Authorization: Bearer ");
            head.push_str(token);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body))
            .map_err(io)?;

        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).map_err(io)?;
        let status = parse_status_line(&line).ok_or_else(|| ExportError::BadResponse {
            target: describe(),
            line: line.trim_end().chars().take(100).collect(),
        })?;
        if (200..300).contains(&status) {
            return Ok(());
        }
        let mut rest = Vec::new();
        // Best effort: the message is only for the log.
        let _ = reader.take(4096).read_to_end(&mut rest);
        let rest = String::from_utf8_lossy(&rest);
        let message = rest
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body)
            .trim()
            .chars()
            .take(300)
            .collect();
        Err(ExportError::Status {
            target: describe(),
            status,
            message,
        })
    }

    fn connect(&self) -> std::io::Result<TcpStream> {
        let mut last = None;
        for addr in self.authority.to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, self.timeout) {
                Ok(stream) => return Ok(stream),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "no address for the host")
        }))
    }
}

/// Posts batches to a collector.
#[derive(Debug, Clone)]
pub struct HttpExporter {
    http: CollectorHttp,
    /// The request target, e.g. `/api/v1/events`.
    target: String,
    format: WireFormat,
}

/// Splits a collector URL `http://host[:port][/base]` into `host:port` (port 80 by default)
/// and the base path without its trailing `/`, refusing what the plain HTTP/1.1 senders of this
/// crate cannot use (https, a malformed host, a token with a line break).
pub(crate) fn collector_address(
    url: &str,
    token: Option<&str>,
) -> Result<(String, String), AgentError> {
    let invalid = |problem| AgentError::InvalidUrl {
        url: url.to_owned(),
        problem,
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| invalid("only http:// is supported here; use the sidecar for https"))?;
    let (authority, base) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains(['@', ' ']) {
        return Err(invalid("the host is missing or malformed"));
    }
    if token.is_some_and(|t| t.contains(['\r', '\n'])) {
        return Err(invalid("the token contains a line break"));
    }
    let authority = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, base.trim_end_matches('/').to_owned()))
}

impl HttpExporter {
    /// `url` is `http://host[:port][/base]`; events go to `{base}/api/v1/events`.
    pub fn new(
        url: &str,
        format: WireFormat,
        token: Option<String>,
    ) -> Result<HttpExporter, AgentError> {
        let http = CollectorHttp::new(url, token)?;
        Ok(HttpExporter {
            target: http.target("/api/v1/events"),
            http,
            format,
        })
    }
}

impl Exporter for HttpExporter {
    fn export(&mut self, events: &[RequestEvent]) -> Result<(), ExportError> {
        let body = encode(events, self.format);
        self.http
            .post(&self.target, self.format.content_type(), &body)
    }
}

fn parse_status_line(line: &str) -> Option<u16> {
    let mut parts = line.split_ascii_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    (code.len() == 3).then(|| code.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let e = HttpExporter::new("http://collector:4040/base/", WireFormat::Ndjson, None)
            .expect("valid");
        assert_eq!(
            (e.http.authority.as_str(), e.target.as_str()),
            ("collector:4040", "/base/api/v1/events")
        );
        let e = HttpExporter::new("http://collector", WireFormat::Ndjson, None).expect("valid");
        assert_eq!(
            (e.http.authority.as_str(), e.target.as_str()),
            ("collector:80", "/api/v1/events")
        );
        assert!(HttpExporter::new("https://c", WireFormat::Ndjson, None).is_err());
        assert!(HttpExporter::new("http:///x", WireFormat::Ndjson, None).is_err());
        assert!(
            HttpExporter::new("http://c", WireFormat::Ndjson, Some("a\r\nX: y".into())).is_err()
        );
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line("HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status_line("HTTP/1.0 429 Too Many\r\n"), Some(429));
        assert_eq!(parse_status_line("SSH-2.0\r\n"), None);
        assert_eq!(parse_status_line(""), None);
    }
}
