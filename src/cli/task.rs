//! `keel task NAME`: one run-once task under the same tree as the daemon.

use crate::config::Config;
use crate::exit_code;

/// The tasks this build can run. Each arrives with its service (backfill, janitor,
/// instruments); `RuntimeHandle::task_outcome` already turns a task's end into
/// this command's exit code.
const TASKS: &[&str] = &[];

pub(super) async fn run(_config: &Config, name: &str, _args: &[String]) -> u8 {
    let known = if TASKS.is_empty() {
        "none in this build".to_owned()
    } else {
        TASKS.join(", ")
    };
    tracing::error!(task = %name, %known, "Unknown task.");
    exit_code::USAGE
}
