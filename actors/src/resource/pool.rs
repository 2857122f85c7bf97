//! What both resource pools share: the bb8 error sink that records the real
//! cause of a failed connect, and the pool figures shown in health.

use std::fmt::Display;

use bb8::{ErrorSink, State};

use super::{Availability, PoolStats};

/// Sends bb8's connection errors (refused, authentication failed, DNS) to the
/// registry and the log, instead of leaving callers with a bare "timed out".
#[derive(Debug, Clone)]
pub(super) struct RecordErrors(pub(super) Availability);

impl<E: Display + Send + 'static> ErrorSink<E> for RecordErrors {
    fn sink(&self, error: E) {
        self.0.mark_unreachable(&error.to_string());
    }

    fn boxed_clone(&self) -> Box<dyn ErrorSink<E>> {
        Box::new(self.clone())
    }
}

/// Health's pool figures from bb8's state.
pub(super) fn stats(state: State, max_size: u32) -> PoolStats {
    PoolStats {
        connections: state.connections,
        idle: state.idle_connections,
        max_size,
        waited: state.statistics.get_waited,
        timed_out: state.statistics.get_timed_out,
    }
}
