//! The `[admin]` section: where the admin endpoint listens and its token.

use std::net::SocketAddr;

use keel_core::secret::Secret;
use serde::{Deserialize, Serialize};

/// The `[admin]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Whether `keel run` serves the admin endpoint.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Where it listens.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Bearer token (or `token_file`, or `KEEL__ADMIN__TOKEN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
}

fn yes() -> bool {
    true
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9600))
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: default_listen(),
            token: None,
        }
    }
}

impl AdminConfig {
    /// Every problem, as `(key, what is expected)`.
    pub fn problems(&self) -> Vec<(String, String)> {
        if let Some(token) = &self.token {
            let token = token.expose();
            if token.trim().is_empty() || token.bytes().any(|b| !b.is_ascii_graphic()) {
                return vec![(
                    "token".into(),
                    "a token that is not blank, of printable characters without spaces".into(),
                )];
            }
        }
        if self.enabled && !self.listen.ip().is_loopback() && self.token.is_none() {
            return vec![(
                "token".into(),
                format!("a token (token_file or KEEL__ADMIN__TOKEN) to listen on {}, which is not loopback", self.listen),
            )];
        }
        Vec::new()
    }
}
