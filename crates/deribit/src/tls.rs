//! TLS for `wss://` and `https://`: production Deribit, and `keel sim` when it
//! is given a certificate. Clients trust the public roots and, with a
//! configured `ca_file`, that CA too; the simulator serves the certificate and
//! key it is given. PEM files throughout.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Installs rustls's ring provider as the process default, once; the WebSocket
/// client builds its TLS configuration from it. Safe to call any number of times.
pub fn ensure_provider() {
    // An error means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A TLS file that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct TlsError {
    /// The certificate or key file at fault.
    pub path: String,
    /// What is wrong with it.
    pub problem: String,
}

impl TlsError {
    /// What is wrong with the file at `path`.
    pub fn new(path: &Path, problem: impl std::fmt::Display) -> Self {
        Self {
            path: path.display().to_string(),
            problem: problem.to_string(),
        }
    }
}

/// Every certificate in a PEM file (at least one).
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::new(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::new(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::new(path, "no PEM certificate in it"));
    }
    Ok(certs)
}

/// The client configuration: the public roots, plus the CA in `ca_file`.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    ensure_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        for cert in certificates(path)? {
            roots.add(cert).map_err(|e| TlsError::new(path, e))?;
        }
    }
    Ok(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// The server configuration for a certificate chain and its key.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    ensure_provider();
    let chain = certificates(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::new(key, e))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::new(cert, e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use tokio_tungstenite::tungstenite::Error;

    #[tokio::test]
    async fn wss_urls_are_attempted_not_refused_for_lack_of_tls() {
        super::ensure_provider();
        super::ensure_provider();
        // Nothing listens on port 1: the attempt must get as far as TCP.
        let err = tokio_tungstenite::connect_async("wss://127.0.0.1:1/ws/api/v2")
            .await
            .expect_err("nothing listens there");
        assert!(matches!(err, Error::Io(_)), "{err:?}");
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_a_clear_error() {
        let missing = super::client_config(Some(std::path::Path::new("/nonexistent/ca.pem")))
            .expect_err("no such file");
        assert!(
            missing.to_string().starts_with("/nonexistent/ca.pem: "),
            "{missing}"
        );
        let dir = std::env::temp_dir().join(format!("keel-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = super::client_config(Some(&empty)).expect_err("no certificate");
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
