//! TLS for `wss://` and `https://` exchanges (production Deribit).

/// Installs rustls's ring provider as the process default, once; the WebSocket
/// client builds its TLS configuration from it. Safe to call any number of times.
pub fn ensure_provider() {
    // An error means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
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
}
