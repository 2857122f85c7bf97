//! Deribit's HTTP API (`GET /api/v2/public/{method}`), for the tasks that page
//! through history.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::{codes, RpcError};

/// Why an HTTP call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HttpError {
    /// The exchange answered with an error (10028: slow down).
    #[error("exchange error: {0}")]
    Rpc(RpcError),
    /// No usable answer (connection, timeout, status without a body).
    #[error("exchange unreachable: {0}")]
    Transport(String),
    /// An answer Keel cannot read.
    #[error("unexpected answer: {0}")]
    Shape(String),
}

impl HttpError {
    /// Whether the exchange asked us to slow down.
    pub fn is_rate_limit(&self) -> bool {
        matches!(self, HttpError::Rpc(e) if e.code == codes::TOO_MANY_REQUESTS)
    }
}

#[derive(Deserialize)]
struct Body<T> {
    result: Option<T>,
    error: Option<RpcError>,
}

/// A client for one exchange's public HTTP methods.
#[derive(Clone, Debug)]
pub struct HttpClient {
    base: String,
    client: reqwest::Client,
}

/// The largest answer read: a page of 1,000 trades is about 400 KB.
pub const MAX_BODY: usize = 16 << 20;

/// Reads a body of at most `cap` bytes; a larger one is an error, not memory.
async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<Vec<u8>, HttpError> {
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Err(HttpError::Shape(format!(
            "an answer larger than {cap} bytes"
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| HttpError::Transport(e.to_string()))?
    {
        if body.len() + chunk.len() > cap {
            return Err(HttpError::Shape(format!(
                "an answer larger than {cap} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

impl HttpClient {
    /// `base` is e.g. `https://www.deribit.com` or `http://127.0.0.1:8765`;
    /// `ca_file`, a PEM CA trusted besides the public roots (a `keel sim` with
    /// its own certificate).
    pub fn new(
        base: &str,
        timeout: Duration,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, HttpError> {
        let mut builder = reqwest::Client::builder().timeout(timeout);
        if let Some(path) = ca_file {
            for cert in
                super::tls::certificates(path).map_err(|e| HttpError::Transport(e.to_string()))?
            {
                let cert = reqwest::Certificate::from_der(cert.as_ref())
                    .map_err(|e| HttpError::Transport(format!("{}: {e}", path.display())))?;
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| HttpError::Transport(e.to_string()))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            client,
        })
    }

    /// Calls `public/{method}` with query parameters.
    pub async fn public<T: DeserializeOwned>(
        &self,
        method: &str,
        params: &[(&str, String)],
    ) -> Result<T, HttpError> {
        let url = format!("{}/api/v2/public/{method}", self.base);
        let response = self
            .client
            .get(&url)
            .query(params)
            .send()
            .await
            .map_err(|e| HttpError::Transport(e.to_string()))?;
        let text = read_capped(response, MAX_BODY).await?;
        let body: Body<T> =
            serde_json::from_slice(&text).map_err(|e| HttpError::Shape(e.to_string()))?;
        match (body.result, body.error) {
            (_, Some(error)) => Err(HttpError::Rpc(error)),
            (Some(result), None) => Ok(result),
            (None, None) => Err(HttpError::Shape("neither result nor error".into())),
        }
    }
}
