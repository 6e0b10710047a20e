//! The TLS crypto provider. profwatch's TLS is rustls with the ring provider; reqwest is built
//! without a provider of its own and refuses to build a client until a process-wide default is
//! installed, so every place that builds an HTTP client calls [`install_crypto_provider`] first.

/// Installs ring as the process's default rustls provider (once; later calls do nothing).
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err: another provider was installed first, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
