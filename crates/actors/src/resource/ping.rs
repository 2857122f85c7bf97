//! One round trip to a resource's server: the same operation for every
//! resource, each running it with its own command.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::resource::Operation;

/// One round trip to the server; answers its latency.
#[derive(Clone, Copy, Debug)]
pub struct Ping;

impl Operation for Ping {
    type Output = Duration;
    const NAME: &'static str = "ping";

    fn summary(&self) -> String {
        "ping".into()
    }
}

impl Ping {
    /// How long `round_trip` took, or its error.
    pub(crate) async fn time<E>(
        round_trip: impl Future<Output = Result<(), E>>,
    ) -> Result<Duration, E> {
        let started = Instant::now();
        round_trip.await?;
        Ok(started.elapsed())
    }
}
