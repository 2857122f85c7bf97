//! `keel run`: the long-running daemon.

use crate::config::Config;
use crate::runtime::Runtime;
use crate::{exit_code, RuntimeHandle};
use keel_core::supervisor::TreeExit;

use std::time::Duration;

use crate::systemd::Notifier;

use super::signals::ShutdownSignals;
use super::watchdog::{self, Watchdog};

pub(super) async fn run(config: &Config, tree: Runtime) -> u8 {
    // Installed before the tree starts, so a signal during start-up is not lost.
    let mut signals = match ShutdownSignals::install() {
        Ok(signals) => signals,
        Err(error) => {
            tracing::error!(%error, "Cannot install signal handlers.");
            return exit_code::SUPERVISOR_GAVE_UP;
        }
    };
    let notifier = service_manager(config);
    if let Some((notifier, _)) = &notifier {
        notifier.say("STATUS=Starting the supervision tree.");
    }
    let handle = match tree.start().await {
        Ok(handle) => handle,
        Err(error) => {
            tracing::error!(%error, "Keel could not start.");
            return exit_code::SUPERVISOR_GAVE_UP;
        }
    };
    let handle = std::sync::Arc::new(handle);
    let _reporter = notifier.map(|(notifier, watchdog)| {
        crate::systemd::Reporter::start(std::sync::Arc::clone(&handle), notifier, watchdog)
    });
    let admin = if config.admin.enabled {
        match crate::admin::AdminServer::start(&config.admin, std::sync::Arc::clone(&handle)).await
        {
            Ok(admin) => Some(admin),
            Err(error) => {
                tracing::error!(%error, "Admin endpoint could not start; shutting down.");
                shut_down(&handle, &mut signals).await;
                return exit_code::BAD_CONFIG;
            }
        }
    } else {
        None
    };
    let admin_shutdown = admin
        .as_ref()
        .map(|a| std::sync::Arc::clone(&a.shutdown_requested));
    let asked = tokio::select! {
        signal = signals.next() => {
            tracing::info!(signal, "Shutting down: producers, then consumers, then resources.");
            true
        }
        () = async { match &admin_shutdown { Some(n) => n.notified().await, None => std::future::pending().await } } => {
            tracing::info!("Shutting down on an admin request: producers, then consumers, then resources.");
            true
        }
        // The supervisor gave up and is draining the tree by itself.
        () = handle.shutting_down() => false,
    };
    let _watchdog = Watchdog::arm(
        config.supervisor.shutdown_deadline + watchdog::GRACE,
        handle.registry().clone(),
        if asked {
            exit_code::NOT_DRAINED
        } else {
            exit_code::SUPERVISOR_GAVE_UP
        },
    );
    let code = if asked {
        shut_down(&handle, &mut signals).await
    } else {
        exit_code_of(&handle.wait().await)
    };
    drop(admin);
    code
}

/// The service manager's notification socket and watchdog, when it set them.
fn service_manager(config: &Config) -> Option<(Notifier, Option<Duration>)> {
    let notifier = match Notifier::from_env() {
        Ok(notifier) => notifier?,
        Err(error) => {
            tracing::error!(%error, "Cannot speak to the service manager; running without notifications.");
            return None;
        }
    };
    let watchdog = crate::systemd::watchdog_from_env();
    // A child's drain holds the supervisor's loop (a restart waits for it), so
    // a shorter watchdog would kill a healthy process.
    let drain = config.supervisor.shutdown_timeout;
    if let Some(watchdog) = watchdog.filter(|w| *w <= drain * 2) {
        tracing::warn!(
            watchdog = %humantime::format_duration(watchdog),
            shutdown_timeout = %humantime::format_duration(drain),
            "The service manager's watchdog is not above twice [supervisor] shutdown_timeout; a restart that drains a child may be taken for a hang."
        );
    }
    Some((notifier, watchdog))
}

/// Drains the tree; a SIGINT meanwhile makes the rest of the shutdown skip the drain.
pub(super) async fn shut_down(handle: &RuntimeHandle, signals: &mut ShutdownSignals) -> u8 {
    let shutdown = handle.shutdown();
    tokio::pin!(shutdown);
    let report = loop {
        tokio::select! {
            report = &mut shutdown => break report,
            () = signals.next_interrupt() => {
                tracing::warn!("Second SIGINT: killing the remaining children without draining.");
                handle.skip_drain();
            }
        }
    };
    let killed: Vec<&str> = report.killed().map(|c| c.name.as_str()).collect();
    if killed.is_empty() {
        tracing::info!(
            took = %humantime::format_duration(report.took),
            stopped = report.stopped.len(),
            "Shutdown complete; everything drained."
        );
    } else {
        tracing::warn!(
            took = %humantime::format_duration(report.took),
            stopped = report.stopped.len(),
            ?killed,
            "Shutdown complete; some children had to be killed."
        );
    }
    match tokio::time::timeout(Duration::from_secs(5), handle.wait()).await {
        Ok(ended) => exit_code_of(&ended),
        Err(_) => exit_code::NOT_DRAINED,
    }
}

/// 0 when everything drained, 1 when something had to be killed, 70 when the
/// supervisor gave up.
pub(super) fn exit_code_of(ended: &TreeExit) -> u8 {
    match ended {
        TreeExit::ShutDown { report } if report.drained() => exit_code::OK,
        TreeExit::ShutDown { .. } => exit_code::NOT_DRAINED,
        TreeExit::GaveUp { .. } => exit_code::SUPERVISOR_GAVE_UP,
    }
}
