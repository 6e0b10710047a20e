//! Serving TLS with rustls (ring provider, no OpenSSL).
//!
//! Invariants: the certificate and key are read, parsed and checked against each other before
//! they are served, at startup and on every reload; a reload that fails leaves the pair in
//! service untouched (the error is logged), so a half-written file never takes the server
//! down. Each handshake takes the pair current at that moment: connections already open keep
//! the certificate they negotiated. With a client CA every client must present a certificate
//! that CA signed (mTLS); the client CA is read once, at startup.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use profwatch_model::tls::{certificates, private_key, PemError};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

/// Where the server's TLS material lives (validated `[tls]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates; when set, clients must present a certificate one of them signed.
    pub client_ca: Option<PathBuf>,
}

/// Why TLS material could not be used; every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate or key file that cannot be read or holds no usable PEM.
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("{cert} with key {key}: {source}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("client CA {path}: {source}")]
    ClientCa {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("client CA {path}: {source}")]
    Verifier {
        path: PathBuf,
        source: rustls::server::VerifierBuilderError,
    },
    #[error("TLS settings: {0}")]
    Config(rustls::Error),
}

/// The certificate the server presents, replaceable while it runs.
#[derive(Debug)]
pub struct ReloadableCert {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadableCert {
    /// Reads and checks the pair.
    pub fn load(cert: &Path, key: &Path) -> Result<ReloadableCert, TlsError> {
        Ok(ReloadableCert {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Arc::new(certified_key(cert, key)?)),
        })
    }

    /// Reads the files again; on success the new pair serves the next handshakes, on failure
    /// the old one stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = Arc::new(certified_key(&self.cert, &self.key)?);
        match self.current.write() {
            Ok(mut guard) => *guard = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(())
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        })
    }
}

/// The acceptor for `settings`, and the certificate handle to reload on SIGHUP.
pub fn acceptor(
    settings: &TlsSettings,
) -> Result<(tokio_rustls::TlsAcceptor, Arc<ReloadableCert>), TlsError> {
    let cert = Arc::new(ReloadableCert::load(&settings.cert, &settings.key)?);
    let acceptor = acceptor_with(settings, cert.clone(), &[b"http/1.1"])?;
    Ok((acceptor, cert))
}

/// An acceptor for `settings` presenting `cert` (so a reload reaches it too) and offering the
/// `alpn` protocols: `http/1.1` for the API, `h2` for OTLP/gRPC.
pub fn acceptor_with(
    settings: &TlsSettings,
    cert: Arc<ReloadableCert>,
    alpn: &[&[u8]],
) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?;
    let mut config = match &settings.client_ca {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in certificates(path)? {
                roots.add(ca).map_err(|source| TlsError::ClientCa {
                    path: path.clone(),
                    source,
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|source| TlsError::Verifier {
                    path: path.clone(),
                    source,
                })?;
            builder
                .with_client_cert_verifier(verifier)
                .with_cert_resolver(cert)
        }
        None => builder.with_no_client_auth().with_cert_resolver(cert),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Reloads `cert` on every SIGHUP, logging the outcome.
pub fn reload_on_sighup(cert: Arc<ReloadableCert>) -> Option<tokio::task::JoinHandle<()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; the certificate will not be reloaded");
                return None;
            }
        };
        Some(tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match cert.reload() {
                    Ok(()) => {
                        tracing::info!(cert = %cert.cert.display(), "TLS certificate reloaded")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "TLS reload failed; still serving the previous certificate")
                    }
                }
            }
        }))
    }
    #[cfg(not(unix))]
    {
        let _ = cert;
        None
    }
}

fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = certificates(cert)?;
    let key_der = private_key(key)?;
    CertifiedKey::from_der(chain, key_der, &rustls::crypto::ring::default_provider()).map_err(
        |source| TlsError::Pair {
            cert: cert.to_owned(),
            key: key.to_owned(),
            source,
        },
    )
}
