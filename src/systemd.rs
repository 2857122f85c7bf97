//! The systemd notify protocol (`sd_notify(3)`), spoken by `keel run` when a
//! service manager sets `NOTIFY_SOCKET` (systemd with `Type=notify`).
//!
//! - `READY=1` once every resource can serve and every permanent worker runs:
//!   what `/readyz` says ([`RuntimeHandle::not_ready`]), so a unit ordered
//!   `After=keel.service` starts when Keel can do its work, not when the
//!   process exists.
//! - `STATUS=` whenever what Keel waits for changes, so `systemctl status`
//!   names the resource and its cause ("redis (connecting: Connection
//!   refused)").
//! - `WATCHDOG=1` every half of `WATCHDOG_USEC`, and only after the root
//!   supervisor answered a ping ([`RuntimeHandle::responsive`]). A supervisor
//!   stuck in a child's start, or a runtime whose threads are all blocked,
//!   stops the pings, and systemd kills and restarts the process instead of
//!   leaving a hung one. The pings come from a task on the same runtime as the
//!   tree, never from a thread of their own that would outlive a wedged
//!   runtime.
//! - `STOPPING=1` when the shutdown begins (asked, or the supervisor gave up);
//!   from then on the pings stop and systemd's `TimeoutStopSec` bounds the rest.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::task::AbortOnDropHandle;

use crate::RuntimeHandle;

/// How often readiness is read from the registry for `READY=1` and `STATUS=`.
const STATUS_EVERY: Duration = Duration::from_millis(500);

/// Why the address in `NOTIFY_SOCKET` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Neither an absolute path nor an abstract name (`@name`).
    #[error(
        "NOTIFY_SOCKET `{0}` is neither an absolute path nor an abstract socket name (`@...`)"
    )]
    BadAddress(String),
    /// The datagram socket could not be made.
    #[error("cannot open a datagram socket for NOTIFY_SOCKET: {0}")]
    Socket(#[source] io::Error),
}

/// A connectionless sender to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    to: SocketAddr,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` asks for; `None` when it is unset (not run
    /// by a service manager that listens).
    pub fn from_env() -> Result<Option<Self>, NotifyError> {
        match std::env::var("NOTIFY_SOCKET") {
            Ok(address) if !address.is_empty() => Self::to(&address).map(Some),
            _ => Ok(None),
        }
    }

    /// A notifier sending to `address`: a socket path, or `@name` for a name in
    /// the abstract namespace (as systemd writes it).
    pub fn to(address: &str) -> Result<Self, NotifyError> {
        let to = if let Some(name) = address.strip_prefix('@') {
            abstract_address(name)?
        } else if address.starts_with('/') {
            SocketAddr::from_pathname(address)
                .map_err(|_| NotifyError::BadAddress(address.to_owned()))?
        } else {
            return Err(NotifyError::BadAddress(address.to_owned()));
        };
        let socket = UnixDatagram::unbound().map_err(NotifyError::Socket)?;
        // A full queue on the manager's side drops a notification instead of
        // blocking a runtime thread; the next one says the same again.
        socket.set_nonblocking(true).map_err(NotifyError::Socket)?;
        Ok(Self { socket, to })
    }

    /// Sends one notification (newline-separated `KEY=value` assignments).
    pub fn send(&self, message: &str) -> io::Result<()> {
        self.socket
            .send_to_addr(message.as_bytes(), &self.to)
            .map(|_| ())
    }

    /// Sends one notification and logs a failure instead of returning it: the
    /// next notification says the same again.
    pub fn say(&self, message: &str) {
        if let Err(error) = self.send(message) {
            tracing::warn!(%error, "Cannot notify the service manager.");
        }
    }
}

#[cfg(target_os = "linux")]
fn abstract_address(name: &str) -> Result<SocketAddr, NotifyError> {
    use std::os::linux::net::SocketAddrExt as _;
    SocketAddr::from_abstract_name(name.as_bytes())
        .map_err(|_| NotifyError::BadAddress(format!("@{name}")))
}

#[cfg(not(target_os = "linux"))]
fn abstract_address(name: &str) -> Result<SocketAddr, NotifyError> {
    Err(NotifyError::BadAddress(format!("@{name}")))
}

/// The watchdog timeout the service manager set (`WATCHDOG_USEC`), if it is
/// meant for this process (`WATCHDOG_PID` unset or this process's id).
pub fn watchdog_from_env() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// The running notification task; dropping it stops the task.
#[derive(Debug)]
pub struct Reporter {
    _task: AbortOnDropHandle<()>,
}

impl Reporter {
    /// Starts telling `notifier` about `handle`'s tree: readiness and status
    /// every half second, a watchdog ping every half of `watchdog` (when set)
    /// while the root supervisor answers, `STOPPING=1` when it shuts down.
    pub fn start(
        handle: Arc<RuntimeHandle>,
        notifier: Notifier,
        watchdog: Option<Duration>,
    ) -> Self {
        let task = tokio::spawn(report(handle, notifier, watchdog));
        Self {
            _task: AbortOnDropHandle::new(task),
        }
    }
}

async fn report(handle: Arc<RuntimeHandle>, notifier: Notifier, watchdog: Option<Duration>) {
    let mut status = tokio::time::interval(STATUS_EVERY);
    status.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Half the timeout, as sd_watchdog_enabled(3) advises: one late ping is
    // not yet a kill.
    let ping_every = watchdog.map(|w| w / 2);
    let mut ping = tokio::time::interval(ping_every.unwrap_or(Duration::from_secs(3600)));
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut ready = false;
    let mut said = String::new();
    let mut answering = true;
    loop {
        tokio::select! {
            () = handle.shutting_down() => {
                notifier.say("STOPPING=1\nSTATUS=Shutting down: producers, then consumers, then resources.");
                return;
            }
            _ = status.tick() => {
                let reasons = handle.not_ready();
                let text = describe(&reasons);
                if reasons.is_empty() && !ready {
                    ready = true;
                    notifier.say(&format!("READY=1\nSTATUS={text}"));
                    said = text;
                } else if text != said {
                    notifier.say(&format!("STATUS={text}"));
                    said = text;
                }
            }
            _ = ping.tick(), if ping_every.is_some() => {
                let within = ping_every.unwrap_or_default();
                if handle.responsive(within).await {
                    notifier.say("WATCHDOG=1");
                    if !answering {
                        tracing::info!("The supervisor answers again; watchdog pings resumed.");
                    }
                    answering = true;
                } else if answering && !handle.is_shutting_down() {
                    answering = false;
                    tracing::error!(
                        within = %humantime::format_duration(within),
                        "The root supervisor did not answer; the watchdog is not fed, so the service manager will restart Keel."
                    );
                }
            }
        }
    }
}

/// The `STATUS=` text for a tree that waits for `reasons` (none: ready).
fn describe(reasons: &BTreeMap<String, String>) -> String {
    if reasons.is_empty() {
        return "Ready: every resource serves and every worker runs.".to_owned();
    }
    let waiting: Vec<String> = reasons
        .iter()
        .map(|(name, reason)| format!("{name} ({reason})"))
        .collect();
    format!("Waiting for {}.", waiting.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_paths_or_abstract_names() {
        assert!(Notifier::to("/run/systemd/notify").is_ok());
        assert!(Notifier::to("@/org/freedesktop/systemd1/notify/42").is_ok());
        assert!(matches!(
            Notifier::to("run/notify"),
            Err(NotifyError::BadAddress(_))
        ));
        assert!(matches!(Notifier::to(""), Err(NotifyError::BadAddress(_))));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn notifications_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("keel-notify-test-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let manager = UnixDatagram::bind_addr(&address).unwrap();
        Notifier::to(&format!("@{name}"))
            .unwrap()
            .send("READY=1")
            .unwrap();
        let mut buffer = [0u8; 64];
        manager
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = manager.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"READY=1");
    }

    #[test]
    fn the_status_names_what_keel_waits_for() {
        let mut reasons = BTreeMap::new();
        assert!(describe(&reasons).starts_with("Ready"));
        reasons.insert("redis".to_owned(), "connecting: refused".to_owned());
        reasons.insert("receiver".to_owned(), "restarting".to_owned());
        assert_eq!(
            describe(&reasons),
            "Waiting for receiver (restarting), redis (connecting: refused)."
        );
    }
}
