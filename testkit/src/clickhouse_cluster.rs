//! A throwaway ClickHouse cluster on loopback: N `clickhouse-server` processes, one shard each,
//! no replication, configured here (tests and the load benchmark start their own).
//!
//! Each node listens on its own loopback address (127.0.0.11, 127.0.0.12, ...) with the SAME
//! HTTP and TCP ports, as the nodes of a real cluster do. That matters: profwatch reaches the
//! shards it finds in `system.clusters` at the HTTP port of the URL it was given.
//!
//! Every server runs under a small shell wrapper that stops it when its stdin closes, and that
//! stdin is a pipe held by this process: the servers go away with the process that started
//! them, however it ends (a test binary never runs the destructors of its statics).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// The cluster name written into every node's `remote_servers`.
pub const CLUSTER: &str = "profwatch_test";

/// A running cluster. Dropping it stops the servers and deletes their data.
#[derive(Debug)]
pub struct LocalCluster {
    nodes: Vec<Node>,
    http_port: u16,
    /// With [`LocalCluster::start_tls`]: the HTTPS port.
    https_port: Option<u16>,
    _dir: tempfile::TempDir,
}

/// A certificate and key (PEM files) a server presents on its HTTPS port.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug)]
struct Node {
    ip: String,
    child: Child,
    /// Closing it stops the server (see the module docs).
    stdin: Option<ChildStdin>,
}

impl LocalCluster {
    /// Starts `shards` servers and waits until each answers `/ping` and sees the cluster.
    ///
    /// ClickHouse cannot listen on port 0 and say which port it got, so the ports are ones found
    /// free on the cluster's own loopback addresses (which nothing else uses); should another
    /// process take one before the servers bind it, the whole cluster is started again on new
    /// ports (three tries), so that race costs a retry, never a failed test.
    pub fn start(shards: usize) -> Result<LocalCluster, String> {
        Self::start_with(shards, 11, None)
    }

    /// One server on 127.0.0.21 (apart from [`LocalCluster::start`]'s addresses) that also
    /// serves HTTPS with `tls`; see [`LocalCluster::https_url`].
    pub fn start_tls(tls: &ServerTls) -> Result<LocalCluster, String> {
        Self::start_with(1, 21, Some(tls))
    }

    fn start_with(
        shards: usize,
        first_ip: usize,
        tls: Option<&ServerTls>,
    ) -> Result<LocalCluster, String> {
        let mut last = String::new();
        for attempt in 1..=3 {
            match Self::start_once(shards, first_ip, tls) {
                Ok(c) => return Ok(c),
                Err(e) => {
                    eprintln!("starting the ClickHouse cluster (attempt {attempt}): {e}");
                    last = e;
                }
            }
        }
        Err(last)
    }

    fn start_once(
        shards: usize,
        first_ip: usize,
        tls: Option<&ServerTls>,
    ) -> Result<LocalCluster, String> {
        let server = find_server()?;
        let dir = tempfile::Builder::new()
            .prefix("profwatch-ch-cluster-")
            .tempdir()
            .map_err(|e| format!("creating a directory for the cluster: {e}"))?;
        let ips: Vec<String> = (0..shards)
            .map(|i| format!("127.0.0.{}", first_ip + i))
            .collect();
        let ports = free_ports(&ips, 3)?;
        let (http_port, tcp_port) = (ports[0], ports[1]);
        let https = tls.map(|t| (ports[2], t));
        std::fs::write(dir.path().join("users.xml"), USERS_XML)
            .map_err(|e| format!("writing users.xml: {e}"))?;
        let mut nodes = Vec::new();
        for (i, ip) in ips.iter().enumerate() {
            let node_dir = dir.path().join(format!("node{}", i + 1));
            for sub in ["data", "tmp", "log", "user_files", "format_schemas"] {
                std::fs::create_dir_all(node_dir.join(sub))
                    .map_err(|e| format!("creating {}: {e}", node_dir.display()))?;
            }
            let config = node_dir.join("config.xml");
            let mut xml = config_xml(&node_dir, dir.path(), ip, &ips, http_port, tcp_port);
            if let Some((port, tls)) = https {
                xml = xml.replace("<listen_host>", &https_xml(port, tls));
            }
            std::fs::write(&config, xml)
                .map_err(|e| format!("writing {}: {e}", config.display()))?;
            let mut child = Command::new("sh")
                .arg("-c")
                .arg(
                    "$0 --config-file=\"$1\" >\"$2\" 2>&1 & ch=$!; \
                     cat >/dev/null; kill $ch 2>/dev/null; wait $ch",
                )
                .arg(&server)
                .arg(&config)
                .arg(node_dir.join("log/stdout.log"))
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("starting {}: {e}", server.display()))?;
            let stdin = child.stdin.take();
            nodes.push(Node {
                ip: ip.clone(),
                child,
                stdin,
            });
        }
        let cluster = LocalCluster {
            nodes,
            http_port,
            https_port: https.map(|(port, _)| port),
            _dir: dir,
        };
        cluster.wait_ready(Duration::from_secs(90))?;
        Ok(cluster)
    }

    /// The HTTP URL of every node, shard 1 first.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("http://{}:{}", n.ip, self.http_port))
            .collect()
    }

    /// The HTTPS URL of the first node, when started with [`LocalCluster::start_tls`].
    pub fn https_url(&self) -> Option<String> {
        Some(format!(
            "https://{}:{}",
            self.nodes.first()?.ip,
            self.https_port?
        ))
    }

    /// Runs one SQL statement on one node over HTTP; returns the body (trimmed) or the error.
    pub fn query(&self, node: usize, sql: &str) -> Result<String, String> {
        let ip = &self.nodes.get(node).ok_or("no such node")?.ip;
        http_post(&format!("{ip}:{}", self.http_port), sql)
    }

    /// The servers' process ids (each is the only child of its shell wrapper), for measuring.
    pub fn server_pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|n| {
                let pid = n.child.id();
                std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                    .ok()?
                    .split_whitespace()
                    .find_map(|c| c.parse().ok())
            })
            .collect()
    }

    fn wait_ready(&self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        for (i, _) in self.nodes.iter().enumerate() {
            loop {
                let sql =
                    format!("SELECT count() FROM system.clusters WHERE cluster = '{CLUSTER}'");
                match self.query(i, &sql) {
                    Ok(n) if n == self.nodes.len().to_string() => break,
                    Ok(_) | Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(200))
                    }
                    other => {
                        return Err(format!(
                            "ClickHouse node {} did not become ready: {other:?}",
                            i + 1
                        ))
                    }
                }
            }
        }
        Ok(())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            drop(node.stdin.take());
        }
        for node in &mut self.nodes {
            let _ = node.child.wait();
        }
    }
}

/// `clickhouse-server`, as `scripts/clickhouse.sh` finds it.
fn find_server() -> Result<PathBuf, String> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join("clickhouse-server"));
    on_path
        .chain(["/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"].map(PathBuf::from))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "clickhouse-server is not installed (scripts/clickhouse.sh start installs it)"
                .to_owned()
        })
}

/// An HTTP and a TCP port free on every one of `ips`.
fn free_ports(ips: &[String], n: usize) -> Result<Vec<u16>, String> {
    let mut found = Vec::new();
    for _ in 0..50 {
        let probe = TcpListener::bind((ips[0].as_str(), 0))
            .map_err(|e| format!("binding {}: {e}", ips[0]))?;
        let port = probe
            .local_addr()
            .map_err(|e| format!("local address: {e}"))?
            .port();
        drop(probe);
        let free_everywhere = ips
            .iter()
            .all(|ip| TcpListener::bind((ip.as_str(), port)).is_ok());
        if free_everywhere && !found.contains(&port) {
            found.push(port);
            if found.len() == n {
                return Ok(found);
            }
        }
    }
    Err("found no port free on every loopback address".to_owned())
}

fn http_post(addr: &str, sql: &str) -> Result<String, String> {
    let addr: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{sql}",
        sql.len()
    )
    .map_err(|e| format!("sending to {addr}: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("reading from {addr}: {e}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not an HTTP response: {response:?}"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    if head.starts_with("HTTP/1.1 200") {
        Ok(body.trim().to_owned())
    } else {
        Err(body.trim().to_owned())
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The HTTPS port and the certificate ClickHouse (its OpenSSL) serves it with, put before
/// `<listen_host>` in the config.
fn https_xml(port: u16, tls: &ServerTls) -> String {
    format!(
        r#"<https_port>{port}</https_port>
    <openSSL>
        <server>
            <certificateFile>{}</certificateFile>
            <privateKeyFile>{}</privateKeyFile>
            <verificationMode>none</verificationMode>
            <loadDefaultCAFile>false</loadDefaultCAFile>
            <disableProtocols>sslv2,sslv3</disableProtocols>
        </server>
    </openSSL>
    <listen_host>"#,
        tls.cert.display(),
        tls.key.display()
    )
}

fn config_xml(
    node_dir: &Path,
    cluster_dir: &Path,
    ip: &str,
    ips: &[String],
    http_port: u16,
    tcp_port: u16,
) -> String {
    let d = node_dir.display();
    let shards: String = ips
        .iter()
        .map(|ip| {
            format!("<shard><replica><host>{ip}</host><port>{tcp_port}</port></replica></shard>")
        })
        .collect();
    format!(
        r#"<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>{d}/log/clickhouse-server.log</log>
        <errorlog>{d}/log/clickhouse-server.err.log</errorlog>
        <size>10M</size>
        <count>1</count>
    </logger>
    <listen_host>{ip}</listen_host>
    <http_port>{http_port}</http_port>
    <tcp_port>{tcp_port}</tcp_port>
    <max_concurrent_queries>100</max_concurrent_queries>
    <mark_cache_size>67108864</mark_cache_size>
    <uncompressed_cache_size>67108864</uncompressed_cache_size>
    <path>{d}/data/</path>
    <tmp_path>{d}/tmp/</tmp_path>
    <user_files_path>{d}/user_files/</user_files_path>
    <format_schema_path>{d}/format_schemas/</format_schema_path>
    <users_config>{users}</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
    <remote_servers>
        <{CLUSTER}>{shards}</{CLUSTER}>
    </remote_servers>
</yandex>
"#,
        users = cluster_dir.join("users.xml").display(),
    )
}

const USERS_XML: &str = r#"<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>2000000000</max_memory_usage>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks>
                <ip>::1</ip>
                <ip>127.0.0.0/8</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
"#;
