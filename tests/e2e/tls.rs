//! TLS end to end, through the real binary, with a CA made in the test: https serving (and
//! only https on that port), certificate reload on SIGHUP, mTLS, bad files refused at start,
//! the real sidecar shipping over https and over mTLS, the ClickHouse store over https to a
//! real ClickHouse whose certificate a private CA signed, and an https Slack sink behind a
//! private CA getting a real regression's alert, its markup escaped.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use profwatch_e2e::pki::{https_client, served_certificate, Issued, TestCa};
use profwatch_e2e::*;

use crate::agent::Agent;

/// `profwatch server` over TLS with `cert` (and `--tls-client-ca` when given).
fn tls_server(art: &Path, cert: &Issued, client_ca: Option<&Path>) -> Server {
    let (cert_path, key_path) = cert.write(art, "server");
    let mut args = vec![
        "--data-dir".to_owned(),
        art.join("data").display().to_string(),
        "--tls-cert".to_owned(),
        cert_path.display().to_string(),
        "--tls-key".to_owned(),
        key_path.display().to_string(),
    ];
    if let Some(ca) = client_ca {
        args.push("--tls-client-ca".to_owned());
        args.push(ca.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(&args, &art.join("server.log"))
}

fn host_port(server: &Server) -> String {
    server
        .url
        .strip_prefix("https://")
        .unwrap_or_else(|| panic!("the server should say https://, said {}", server.url))
        .to_owned()
}

fn ingest(c: &Client, service: &str, n: usize) -> Reply {
    c.post_events(
        ndjson(&events(service, "1", n)),
        "application/x-ndjson",
        None,
    )
}

#[test]
fn tls_serves_https_only_to_clients_that_trust_its_ca() {
    let art = artifacts("tls_serves_https_only_to_clients_that_trust_its_ca");
    let ca = TestCa::new("profwatch test CA");
    let server = tls_server(&art, &ca.server(1), None);
    let addr = host_port(&server);

    let c = Client::with_http(&server.url, https_client(&ca.pem(), None));
    assert_eq!(c.get("/healthz").status, 200);
    let r = ingest(&c, "tls-ingest", 120);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(c.total_requests("tls-ingest", 1), 120.0);

    let plain = Client::new(&format!("http://{addr}")).get("/healthz");
    assert_eq!(
        plain.status, 0,
        "plain HTTP to the TLS port must fail: {plain:?}"
    );

    let stranger = TestCa::new("another CA");
    let untrusting = Client::with_http(&server.url, https_client(&stranger.pem(), None));
    let r = untrusting.get("/healthz");
    assert_eq!(
        r.status, 0,
        "a client that does not trust the CA must fail: {r:?}"
    );
    assert!(
        served_certificate(&addr, &stranger.pem()).is_err(),
        "the handshake must fail without the CA"
    );
}

#[test]
fn tls_reloads_the_certificate_on_sighup() {
    let art = artifacts("tls_reloads_the_certificate_on_sighup");
    let ca = TestCa::new("profwatch test CA");
    let first = ca.server(1);
    let server = tls_server(&art, &first, None);
    let addr = host_port(&server);
    assert_eq!(served_certificate(&addr, &ca.pem()), Ok(first.der.clone()));

    let second = ca.server(2);
    second.write(&art, "server");
    hup(&server);
    assert!(
        eventually(Duration::from_secs(30), || served_certificate(
            &addr,
            &ca.pem()
        ) == Ok(second.der.clone())),
        "the certificate with serial 2 is not served after SIGHUP; see {}",
        art.display()
    );

    // A broken file: the old pair stays in service and the log says why.
    std::fs::write(art.join("server.crt"), "not a certificate").expect("write");
    hup(&server);
    assert!(
        eventually(Duration::from_secs(30), || std::fs::read_to_string(
            &server.log
        )
        .unwrap_or_default()
        .contains("TLS reload failed")),
        "no log line for the failed reload; see {}",
        art.display()
    );
    assert_eq!(served_certificate(&addr, &ca.pem()), Ok(second.der));
}

fn hup(server: &Server) {
    let status = Command::new("kill")
        .arg("-HUP")
        .arg(server.child.id().to_string())
        .status()
        .expect("kill -HUP");
    assert!(status.success());
}

#[test]
fn tls_requires_a_client_certificate_with_a_client_ca() {
    let art = artifacts("tls_requires_a_client_certificate_with_a_client_ca");
    let ca = TestCa::new("profwatch test CA");
    let ca_path = ca.write(&art, "ca");
    let server = tls_server(&art, &ca.server(1), Some(&ca_path));

    let anonymous = Client::with_http(&server.url, https_client(&ca.pem(), None));
    let r = ingest(&anonymous, "tls-mtls", 10);
    assert_eq!(r.status, 0, "no client certificate must be refused: {r:?}");

    let stranger = TestCa::new("another CA").client("intruder");
    let r = ingest(
        &Client::with_http(&server.url, https_client(&ca.pem(), Some(&stranger))),
        "tls-mtls",
        10,
    );
    assert_eq!(
        r.status, 0,
        "a certificate from another CA must be refused: {r:?}"
    );

    let sidecar = ca.client("sidecar");
    let c = Client::with_http(&server.url, https_client(&ca.pem(), Some(&sidecar)));
    let r = ingest(&c, "tls-mtls", 40);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(c.total_requests("tls-mtls", 1), 40.0);
}

#[test]
fn tls_refuses_bad_files_at_startup_naming_them() {
    let art = artifacts("tls_refuses_bad_files_at_startup_naming_them");
    let ca = TestCa::new("profwatch test CA");
    let (cert, key) = ca.server(1).write(&art, "server");
    let garbage = art.join("garbage.pem");
    std::fs::write(&garbage, "not PEM at all").expect("write");
    let other_key = art.join("other.key");
    std::fs::write(&other_key, ca.server(2).key_pem).expect("write");
    let missing = art.join("missing.pem");
    for (what, cert, key) in [
        ("garbage certificate", &garbage, &key),
        ("garbage key", &cert, &garbage),
        ("missing key", &cert, &missing),
        ("mismatched key", &cert, &other_key),
    ] {
        let out = Command::new(profwatch_bin())
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(art.join("data"))
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .env_remove("PROFWATCH_CLICKHOUSE_URL")
            .output()
            .expect("run profwatch");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: the server started");
        let named = if what == "garbage certificate" {
            cert
        } else {
            key
        };
        assert!(
            stderr.contains(&*named.display().to_string()),
            "{what}: the error should name {}: {stderr}",
            named.display()
        );
    }
}

#[test]
fn tls_sidecar_ships_over_https() {
    let art = artifacts("tls_sidecar_ships_over_https");
    let ca = TestCa::new("profwatch test CA");
    let ca_path = ca.write(&art, "ca");
    let server = tls_server(&art, &ca.server(1), None);
    let agent = Agent::start_with(
        &server.url,
        &art.join("agent"),
        &art.join("agent.log"),
        &[OsStr::new("--ca-file"), ca_path.as_os_str()],
    );
    agent.send("tls-sidecar", "b1", 300);
    let c = Client::with_http(&server.url, https_client(&ca.pem(), None));
    assert!(
        eventually(Duration::from_secs(60), || c
            .total_requests("tls-sidecar", 1)
            == 300.0),
        "events did not arrive over https: {}; status {}",
        c.total_requests("tls-sidecar", 1),
        agent.status()
    );
}

#[test]
fn tls_sidecar_ships_over_mtls() {
    let art = artifacts("tls_sidecar_ships_over_mtls");
    let ca = TestCa::new("profwatch test CA");
    let ca_path = ca.write(&art, "ca");
    let server = tls_server(&art, &ca.server(1), Some(&ca_path));
    let sidecar = ca.client("sidecar");
    let (cert, key) = sidecar.write(&art, "sidecar");
    let agent = Agent::start_with(
        &server.url,
        &art.join("agent"),
        &art.join("agent.log"),
        &[
            OsStr::new("--ca-file"),
            ca_path.as_os_str(),
            OsStr::new("--client-cert"),
            cert.as_os_str(),
            OsStr::new("--client-key"),
            key.as_os_str(),
        ],
    );
    agent.send("tls-sidecar-mtls", "b1", 300);
    let c = Client::with_http(&server.url, https_client(&ca.pem(), Some(&sidecar)));
    assert!(
        eventually(Duration::from_secs(60), || c
            .total_requests("tls-sidecar-mtls", 1)
            == 300.0),
        "events did not arrive over mTLS: {}; status {}",
        c.total_requests("tls-sidecar-mtls", 1),
        agent.status()
    );
}

/// `--clickhouse-ca-file`: the store talks https to a real ClickHouse (18.16, its own https
/// port) whose certificate the test's CA signed; without the CA the server refuses to start and
/// says why.
#[test]
fn clickhouse_over_https_with_a_private_ca() {
    use profwatch_testkit::clickhouse_cluster::{LocalCluster, ServerTls};
    if clickhouse_url().is_none() {
        return;
    }
    let art = artifacts("clickhouse_over_https_with_a_private_ca");
    let ca = TestCa::new("profwatch test ClickHouse CA");
    let (cert, key) = ca.server_for(&["127.0.0.21"], 21).write(&art, "clickhouse");
    let ch = LocalCluster::start_tls(&ServerTls { cert, key }).expect("ClickHouse with https");
    let url = ch.https_url().expect("an https port");
    let ca_path = ca.write(&art, "ca");

    let untrusted = Command::new(profwatch_bin())
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--clickhouse-url",
            &url,
        ])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&untrusted.stderr);
    assert!(!untrusted.status.success(), "{err}");
    assert!(
        err.to_lowercase().contains("certificate") && !err.contains("panicked"),
        "{err}"
    );

    let server = Server::start(
        &[
            "--clickhouse-url",
            &url,
            "--clickhouse-ca-file",
            ca_path.to_str().expect("utf-8"),
            "--clickhouse-database",
            "pw_https",
        ],
        &art.join("server.log"),
    );
    let c = server.client();
    let r = ingest(&c, "over-https", 40);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(c.total_requests("over-https", 1), 40.0);
    // The rows are in that ClickHouse (asked over its plain HTTP port).
    let stored = ch
        .query(
            0,
            "SELECT count() FROM pw_https.events WHERE service = 'over-https'",
        )
        .expect("count");
    assert_eq!(stored, "40");
}

/// An https receiver whose certificate `ca` signed: every request it gets (head and body), as
/// text, answered 200.
fn https_receiver(
    ca: &TestCa,
) -> (
    String,
    std::sync::mpsc::Receiver<String>,
    std::thread::JoinHandle<()>,
) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::io::{Read, Write};

    profwatch_model::tls::install_crypto_provider();
    let issued = ca.server(41);
    let config = std::sync::Arc::new(
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(issued.der.clone())],
                PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).expect("key"),
            )
            .expect("server config"),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                continue;
            };
            let mut tls = rustls::StreamOwned::new(conn, stream);
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            // The head, then as many body bytes as it announces.
            let complete = |got: &[u8]| {
                let text = String::from_utf8_lossy(got);
                let Some(end) = text.find("\r\n\r\n") else {
                    return false;
                };
                let len = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                got.len() >= end + 4 + len
            };
            while !complete(&got) {
                match tls.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            if got.is_empty() {
                continue; // a handshake that failed (an untrusting client)
            }
            let _ =
                tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = tls.flush();
            tls.conn.send_close_notify();
            let _ = tls.flush();
            if tx.send(String::from_utf8_lossy(&got).into_owned()).is_err() {
                return;
            }
        }
    });
    (url, rx, thread)
}

/// An https Slack sink behind a private CA, given with `--alert-ca-file`, gets the alert of a
/// real regression over a real handshake, with the endpoint's Slack markup escaped (no
/// `<!channel>` mention reaches Slack).
#[test]
fn an_https_slack_sink_behind_a_private_ca_gets_the_alert_escaped() {
    let art = artifacts("an_https_slack_sink_behind_a_private_ca_gets_the_alert_escaped");
    let ca = TestCa::new("profwatch alert CA");
    let ca_path = ca.write(&art, "alert-ca");
    let (base, requests, _receiver) = https_receiver(&ca);
    let server = crate::regressions::server_alerting(
        &art,
        &format!("slack={base}/services/T0/B0/secret"),
        &["--alert-ca-file", ca_path.to_str().expect("utf-8")],
    );
    let c = server.client();
    let mut events = crate::regressions::workload();
    for e in &mut events {
        if e.endpoint == "GET /a" {
            e.endpoint = "GET /a<!channel>".into();
        }
    }
    let r = c.post_events(protobuf(&events), "application/x-protobuf", None);
    assert_eq!(r.status, 200, "{}", r.body);
    let report = c.request("POST", "/api/v1/analyze", &[], Vec::new());
    assert_eq!(report.status, 200, "{}", report.body);
    assert_eq!(report.json()["new_regressions"], 1, "{}", report.body);
    let got = requests
        .recv_timeout(Duration::from_secs(60))
        .expect("the alert within 60 s");
    assert!(
        got.starts_with("POST /services/T0/B0/secret HTTP/1.1"),
        "{got}"
    );
    assert!(got.contains("GET /a&lt;!channel&gt;"), "{got}");
    assert!(!got.contains("<!channel>"), "{got}");
    // The details link names the port the server really got (it was asked for port 0).
    assert!(
        got.contains(&format!("<{}/#/regressions/", server.url)),
        "{got}"
    );
}
