//! The resilient executor every PgActor call runs through.

use std::sync::atomic::Ordering;
use std::time::Instant;

use bb8::RunError;
use tokio_postgres::{Client, Transaction};

use super::error::{classify, Class, PgError};
use super::{PgOp, PgShared};
use crate::resource::Unreachable;

/// Runs operation `work` on a pooled connection, retrying transient errors with backoff up
/// to `max_attempts`; permanent errors return at once. After an error that may
/// have reached the server, only `idempotent` work is retried. Once the
/// incarnation is asked to stop, nothing is retried: the attempt in hand (bounded
/// by the checkout timeout and the attempt limit) finishes, and the call returns.
pub(super) async fn execute<O: PgOp>(shared: &PgShared, work: &O) -> Result<O::Output, PgError> {
    let op = O::NAME;
    let started = Instant::now();
    let result = execute_with_retries(shared, work).await;
    let class = result.as_ref().err().map(PgError::class);
    shared.stats.record(op, started.elapsed(), class);
    result
}

async fn execute_with_retries<O: PgOp>(shared: &PgShared, work: &O) -> Result<O::Output, PgError> {
    let (op, idempotent) = (O::NAME, O::IDEMPOTENT);
    let counters = &shared.counters;
    counters.calls.fetch_add(1, Ordering::Relaxed);
    let mut backoff = shared.config.retry_backoff.sequence();
    let mut attempt = 0;
    loop {
        attempt += 1;
        counters.attempts.fetch_add(1, Ordering::Relaxed);
        // Before the first connect applied the schema, a statement would fail
        // for a reason that is only a matter of time.
        let class = if !shared.schema_ready(shared.config.checkout_timeout).await {
            Class::Transient {
                maybe_applied: false,
                cause: "not connected yet (schema not applied)".into(),
            }
        } else {
            let checkout = {
                let _waiting = shared.stats.waiting();
                shared.pool.get().await
            };
            match checkout {
                Ok(mut conn) => {
                    let outcome = tokio::time::timeout(
                        shared.attempt_limit(),
                        work.attempt(&mut conn, shared),
                    )
                    .await;
                    match outcome {
                        Ok(Ok(value)) => {
                            shared.availability.mark_ready();
                            return Ok(value);
                        }
                        // Whatever state the connection is in now, nobody else gets it.
                        Ok(Err(err)) => {
                            conn.poison();
                            classify(&err)
                        }
                        Err(_elapsed) => {
                            conn.poison();
                            Class::Transient {
                                maybe_applied: true,
                                cause: format!(
                                    "no answer within {} (connection discarded)",
                                    humantime::format_duration(shared.attempt_limit())
                                ),
                            }
                        }
                    }
                }
                Err(RunError::TimedOut) => Class::Transient {
                    maybe_applied: false,
                    cause: crate::resource::availability::CHECKOUT_TIMED_OUT.into(),
                },
                Err(RunError::User(err)) => classify(&err),
            }
        };
        match class {
            Class::Rejected { sqlstate, message } => {
                counters.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(PgError::Rejected {
                    op,
                    sqlstate,
                    message,
                });
            }
            Class::Other(message) => {
                counters.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(PgError::Other { op, message });
            }
            Class::Transient {
                maybe_applied,
                cause,
            } => {
                if maybe_applied {
                    shared
                        .availability
                        .mark_unreachable(&Unreachable::Said(cause.clone()));
                    if !idempotent {
                        return Err(PgError::OutcomeUnknown { op, cause });
                    }
                }
                if attempt >= shared.config.max_attempts || shared.stop.is_cancelled() {
                    counters.exhausted.fetch_add(1, Ordering::Relaxed);
                    // Not an ERROR: the caller rides the outage out or retries.
                    tracing::warn!(op, attempts = attempt, %cause, "PostgreSQL call gave up.");
                    return Err(PgError::Unavailable {
                        op,
                        attempts: attempt,
                        last: cause,
                    });
                }
                counters.retries.fetch_add(1, Ordering::Relaxed);
                let delay = backoff.next_delay();
                tracing::debug!(op, attempt, %cause, ?delay, "Transient PostgreSQL error; retrying.");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shared.stop.cancelled() => {}
                }
            }
        }
    }
}

/// Opens a transaction with the configured statement timeout. `SET LOCAL` lasts
/// only for the transaction, so it is safe behind PgBouncer's transaction pooling.
pub(super) async fn begin<'c>(
    client: &'c mut Client,
    statement_timeout_ms: u128,
) -> Result<Transaction<'c>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = {statement_timeout_ms}"
    ))
    .await?;
    Ok(tx)
}

/// Runs one statement in a transaction with the configured statement timeout,
/// in one round trip: `BEGIN; SET LOCAL ...`, the statement and `COMMIT` go out
/// together (tokio-postgres sends requests in the order their futures are
/// first polled, and each sends before its first wait). A statement that
/// fails aborts the transaction, so its `COMMIT` rolls back; the error is the
/// statement's.
pub(super) async fn in_one_trip<T, F>(
    client: &Client,
    statement_timeout_ms: u128,
    statement: F,
) -> Result<T, tokio_postgres::Error>
where
    F: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
{
    let begin = format!("BEGIN; SET LOCAL statement_timeout = {statement_timeout_ms}");
    let (_, value, _) = tokio::try_join!(
        client.batch_execute(&begin),
        statement,
        client.batch_execute("COMMIT")
    )?;
    Ok(value)
}
