//! `keel run`: the long-running daemon.

use crate::config::Config;
use crate::runtime::Runtime;
use crate::supervisor::TreeExit;
use crate::{exit_code, RuntimeHandle};

use super::signals::ShutdownSignals;

pub(super) async fn run(config: &Config) -> u8 {
    // Installed before the tree starts, so a signal during start-up is not lost.
    let mut signals = match ShutdownSignals::install() {
        Ok(signals) => signals,
        Err(error) => {
            tracing::error!(%error, "Cannot install signal handlers.");
            return exit_code::SUPERVISOR_GAVE_UP;
        }
    };
    let handle = match Runtime::from_config(config).start().await {
        Ok(handle) => handle,
        Err(error) => {
            tracing::error!(%error, "Keel could not start.");
            return exit_code::SUPERVISOR_GAVE_UP;
        }
    };
    let handle = std::sync::Arc::new(handle);
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
    tokio::select! {
        signal = signals.next() => {
            tracing::info!(signal, "Shutting down: draining workers, then resources.");
        }
        () = async { match &admin_shutdown { Some(n) => n.notified().await, None => std::future::pending().await } } => {
            tracing::info!("Shutting down on an admin request: draining workers, then resources.");
        }
        ended = handle.wait() => return exit_code_of(&ended),
    }
    let code = shut_down(&handle, &mut signals).await;
    drop(admin);
    code
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
    tracing::info!(
        took = %humantime::format_duration(report.took),
        stopped = report.stopped.len(),
        ?killed,
        "Shutdown complete."
    );
    exit_code_of(&handle.wait().await)
}

fn exit_code_of(ended: &TreeExit) -> u8 {
    match ended {
        TreeExit::ShutDown { .. } => exit_code::OK,
        TreeExit::GaveUp { .. } => exit_code::SUPERVISOR_GAVE_UP,
    }
}
