//! A progress bar for `keel task` on a terminal, drawn from the task's
//! `progress` detail in the registry (structured logs say the same elsewhere).

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use keel_core::registry::Registry;
use tokio::task::JoinHandle;

/// Follows `task`'s progress until aborted; the bar is cleared when it ends.
pub(super) fn follow(registry: Registry, task: String) -> JoinHandle<()> {
    tokio::spawn(async move {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(task.clone());
        let _clear = ClearOnDrop(bar.clone());
        loop {
            let progress = registry
                .snapshot()
                .actor(&task)
                .and_then(|a| a.details.get("progress").cloned());
            if let Some(p) = progress {
                let n = |k: &str| p.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
                if p.get("gaps").is_some() {
                    bar.set_length(n("gaps"));
                    bar.set_position(n("gaps_done"));
                    bar.set_message(format!("gaps, {} trades stored", n("trades_stored")));
                } else if p.get("until_ms").is_some() {
                    bar.set_length(n("until_ms").saturating_sub(n("from_ms")));
                    bar.set_position(n("at_ms").saturating_sub(n("from_ms")));
                    bar.set_message(format!("ms of history, {} candles", n("candles")));
                }
            }
            bar.tick();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

struct ClearOnDrop(ProgressBar);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
