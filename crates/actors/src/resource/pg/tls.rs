//! TLS to PostgreSQL through rustls (`tokio-postgres-rustls`), with libpq's
//! `sslmode` meanings: `disable` and `prefer` never check the certificate,
//! `require` checks it only when `ca_file` is given, `verify-ca` checks that
//! it is signed by `ca_file` (or a public root), `verify-full` also that it is
//! for the URL's host. A client certificate is sent when `cert_file` and
//! `key_file` are given. SCRAM channel binding comes with it.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::config::{PostgresConfig, SslMode};
use keel_deribit::tls::{certificates, TlsError};

/// What PgActor (and `keel migrate`) connects with: TLS as `config` asks, or none.
pub fn connector(config: &PostgresConfig) -> Result<MakeRustlsConnect, TlsError> {
    keel_deribit::tls::ensure_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::new(Path::new("[postgres]"), e))?;
    let roots = Arc::new(roots(config.ca_file.as_deref())?);
    let builder = match check_of(config) {
        Check::Full => builder.with_root_certificates(roots),
        Check::Chain => {
            let inner = WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
                .build()
                .map_err(|e| TlsError::new(Path::new("[postgres] ca_file"), e))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly { inner }))
        }
        Check::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unchecked { provider })),
    };
    let tls = match (&config.cert_file, &config.key_file) {
        (Some(cert), Some(key)) => {
            let chain = certificates(cert)?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::new(key, e))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| TlsError::new(cert, e))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(tls))
}

/// What is wrong with the TLS keys of `config`, as `(key, expected)`.
pub(super) fn problems(config: &PostgresConfig) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    match (&config.cert_file, &config.key_file) {
        (Some(_), None) => problems.push(("key_file", "the key of cert_file".to_owned())),
        (None, Some(_)) => problems.push(("cert_file", "the certificate of key_file".to_owned())),
        _ => {}
    }
    let mode = config.tls_mode();
    let tls_keys = config.ca_file.is_some() || config.cert_file.is_some();
    if mode == SslMode::Disable && tls_keys {
        problems.push((
            "sslmode",
            "a mode that uses TLS (prefer, require, verify-ca, verify-full) for ca_file and cert_file".to_owned(),
        ));
    }
    if let Some(path) = &config.ca_file {
        if let Err(e) = roots(Some(path)) {
            problems.push(("ca_file", format!("a PEM file of CA certificates ({e})")));
        }
    }
    if let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) {
        if let Err(e) = certificates(cert) {
            problems.push(("cert_file", format!("a PEM certificate chain ({e})")));
        }
        if let Err(e) = PrivateKeyDer::from_pem_file(key) {
            // The error names the file, never its content.
            problems.push((
                "key_file",
                format!("a PEM private key ({}: {e})", key.display()),
            ));
        }
    }
    problems
}

/// How much of the server's certificate is checked.
enum Check {
    Nothing,
    Chain,
    Full,
}

fn check_of(config: &PostgresConfig) -> Check {
    match config.tls_mode() {
        SslMode::Disable | SslMode::Prefer => Check::Nothing,
        // libpq: require with a root certificate behaves as verify-ca.
        SslMode::Require if config.ca_file.is_some() => Check::Chain,
        SslMode::Require => Check::Nothing,
        SslMode::VerifyCa => Check::Chain,
        SslMode::VerifyFull => Check::Full,
    }
}

/// `ca_file`'s certificates, or the public roots without one.
fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in certificates(path)? {
                roots.add(cert).map_err(|e| TlsError::new(path, e))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(roots)
}

/// `verify-ca`: the chain must lead to a trusted root; the name is not checked.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The name is checked after the chain, so a name error means the chain
        // was good.
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `prefer` and `require` without a CA: encrypted, but any certificate is
/// taken (the handshake's signatures are still checked), as libpq does.
#[derive(Debug)]
struct Unchecked {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
