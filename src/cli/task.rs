//! `keel task NAME`: one run-once task under the same tree as the daemon (the
//! resources plus that task); the exit code is the task's result.

use crate::config::Config;
use crate::runtime::Runtime;
use crate::tree::TaskRequest;
use crate::{exit_code, tree, TaskOutcome};

use super::signals::ShutdownSignals;
use super::watchdog::{self, Watchdog};

pub(super) async fn run(config: &Config, request: &TaskRequest) -> u8 {
    let runtime = Runtime::new(config.supervisor.clone()).inspection(&config.registry);
    let specs = match tree::task(config, runtime.registry(), request) {
        Ok(specs) => specs,
        Err(usage) => {
            tracing::error!(?request, %usage, "Bad task arguments.");
            return exit_code::USAGE;
        }
    };
    let Some(task) = specs.last().map(|s| s.name.clone()) else {
        return exit_code::USAGE;
    };
    let mut signals = match ShutdownSignals::install() {
        Ok(signals) => signals,
        Err(error) => {
            tracing::error!(%error, "Cannot install signal handlers.");
            return exit_code::SUPERVISOR_GAVE_UP;
        }
    };
    let handle = match specs
        .into_iter()
        .fold(runtime, Runtime::child)
        .start()
        .await
    {
        Ok(handle) => handle,
        Err(error) => {
            tracing::error!(%error, "The task's tree could not start.");
            return exit_code::SUPERVISOR_GAVE_UP;
        }
    };
    // A bar on a terminal; the task logs its progress either way.
    let bar = std::io::IsTerminal::is_terminal(&std::io::stderr())
        .then(|| super::progress::follow(handle.registry().clone(), task.clone()));
    let outcome = tokio::select! {
        outcome = handle.task_outcome(&task) => Some(outcome),
        signal = signals.next() => {
            tracing::warn!(signal, %task, "Interrupted; stopping the task (it can be run again).");
            None
        }
    };
    if let Some(bar) = bar {
        bar.abort();
        let _ = bar.await;
    }
    let _watchdog = Watchdog::arm(
        config.supervisor.shutdown_deadline + watchdog::GRACE,
        handle.registry().clone(),
        outcome
            .as_ref()
            .map_or(exit_code::INTERRUPTED, TaskOutcome::exit_code),
    );
    handle.shutdown().await;
    let Some(outcome) = outcome else {
        return exit_code::INTERRUPTED;
    };
    match &outcome {
        TaskOutcome::Succeeded => tracing::info!(%task, "Task finished."),
        TaskOutcome::Failed(reason) | TaskOutcome::GaveUp(reason) => {
            tracing::error!(%task, %reason, "Task failed.")
        }
    }
    outcome.exit_code()
}
