//! Resource actors: each owns one connection pool; workers talk to it by message
//! and never see a pool or a connection.
//!
//! PostgreSQL and Redis share one lifecycle ([`ResourceActor`]): the pool is built
//! without I/O so a server that is down never fails the start, a background loop
//! connects with backoff (`connecting` until `ready` in the registry), each call is
//! served off the mailbox in a tracked task, and stopping the actor waits for the
//! calls in flight and then closes the pool. There is no `close` to remember.
//!
//! A caller built with a [`RideOut`] waits out an outage of its resource (see
//! `outage.rs`) instead of failing with it.

mod actor;
mod availability;
mod call;
mod operation;
mod outage;
pub mod pg;
mod ping;
mod pool;
pub mod redis;
mod stats;

pub use actor::{ConnectError, Health, PoolStats, Resource, ResourceActor, ResourceMsg, Status};
pub use availability::{Availability, Unreachable};
pub use call::{Client, NotRunning};
pub use operation::{Call, Execute, Operation};
pub use outage::{CallError, RideOut};
pub use ping::Ping;

/// The driver's error with every cause it carries: `db error` alone hides
/// `database "keel" does not exist`, and `error connecting to server` hides the
/// refusal or the DNS failure.
pub fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// Why a TLS handshake failed, when the cause is configuration (fixed by an
/// operator) rather than the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TlsRefusal {
    /// The certificate is valid but for another host.
    WrongName,
    /// The certificate does not lead to a trusted CA (or is expired, revoked...).
    Untrusted,
    /// Another TLS failure: no common protocol, a refused client certificate.
    Handshake,
}

/// The TLS refusal anywhere in `err`'s causes (rustls errors come wrapped in
/// `io::Error`s, and those in an `Arc` in the redis crate), if any.
pub(crate) fn tls_refusal(err: &(dyn std::error::Error + 'static)) -> Option<TlsRefusal> {
    use rustls::CertificateError as Cert;
    let mut source = Some(err);
    while let Some(e) = source {
        // The redis crate keeps its causes as `Arc<dyn Error>`.
        let unshared: &(dyn std::error::Error + 'static) =
            match e.downcast_ref::<std::sync::Arc<dyn std::error::Error + Send + Sync>>() {
                Some(shared) => shared.as_ref(),
                None => e,
            };
        let rustls = unshared.downcast_ref::<rustls::Error>().or_else(|| {
            unshared
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        match rustls {
            Some(rustls::Error::InvalidCertificate(
                Cert::NotValidForName | Cert::NotValidForNameContext { .. },
            )) => return Some(TlsRefusal::WrongName),
            Some(rustls::Error::InvalidCertificate(_)) => return Some(TlsRefusal::Untrusted),
            Some(_) => return Some(TlsRefusal::Handshake),
            None => {}
        }
        source = e.source();
    }
    None
}

pub use stats::{CallStats, Waiting, LATENCY_BUCKETS};
