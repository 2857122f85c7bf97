//! Counted sends, so the registry can show how many messages wait in each mailbox.
//!
//! ractor has no API for a mailbox's length, so Keel keeps the count itself: every
//! send goes through [`Tell`], which adds one to the receiver's depth before the
//! message is queued, and [`crate::recorded::Recorded`] takes one off as it hands
//! each message to the actor. Sending through `ActorRef::cast`, `call` or
//! `send_after` directly is refused by clippy (`clippy.toml`), so no send is missed.
//!
//! Senders find the counter by the receiver's [`ActorId`] in a process-wide table
//! that holds only live incarnations: [`Recorded`](crate::recorded::Recorded)
//! enters its actor before `pre_start` and removes it when it stops, and the
//! supervisor removes an incarnation it had to kill. A send to an actor that is
//! not in the table (not spawned through Keel) is simply not counted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use parking_lot::RwLock;
use ractor::concurrency::JoinHandle;
use ractor::rpc::CallResult;
use ractor::{ActorId, ActorRef, MessagingErr, RpcReplyPort};

/// The number of messages queued for one actor; shared by its registry entry.
pub type Depth = Arc<AtomicI64>;

static LIVE: LazyLock<RwLock<HashMap<ActorId, Depth>>> = LazyLock::new(Default::default);

/// Enters a fresh incarnation, whose mailbox starts empty.
pub(crate) fn enter(id: ActorId, depth: Depth) {
    depth.store(0, Ordering::Relaxed);
    LIVE.write().insert(id, depth);
}

/// Removes an incarnation that stopped (its queued messages went with it).
pub(crate) fn leave(id: ActorId) {
    let mut live = LIVE.write();
    if let Some(depth) = live.remove(&id) {
        // A killed incarnation may leave after its successor entered; the count
        // then belongs to the successor and stays.
        if !live.values().any(|other| Arc::ptr_eq(other, &depth)) {
            depth.store(0, Ordering::Relaxed);
        }
    }
}

fn depth_of(id: ActorId) -> Option<Depth> {
    LIVE.read().get(&id).cloned()
}

/// Undoes a count when the message never reached the mailbox.
fn uncount(depth: Option<&Depth>) {
    if let Some(depth) = depth {
        depth.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sends that keep the receiver's mailbox depth. Implemented for [`ActorRef`].
pub trait Tell<M> {
    /// Queues `message` without waiting (ractor's `cast`).
    fn tell(&self, message: M) -> Result<(), MessagingErr<M>>;

    /// Queues the message built by `make` after `delay` (ractor's `send_after`); it
    /// is counted when it is queued, not while it waits for its time.
    fn tell_after<F>(&self, delay: Duration, make: F) -> JoinHandle<Result<(), MessagingErr<M>>>
    where
        F: FnOnce() -> M + Send + 'static;

    /// Queues a request carrying a reply port and waits for the reply, at most
    /// `timeout` when one is given (ractor's `call`).
    fn ask<T, F>(
        &self,
        make: F,
        timeout: Option<Duration>,
    ) -> impl std::future::Future<Output = Result<CallResult<T>, MessagingErr<M>>> + Send
    where
        T: Send + 'static,
        F: FnOnce(RpcReplyPort<T>) -> M;
}

#[allow(clippy::disallowed_methods)] // the one place the counted sends are implemented
impl<M> Tell<M> for ActorRef<M>
where
    M: ractor::Message,
{
    fn tell(&self, message: M) -> Result<(), MessagingErr<M>> {
        let depth = depth_of(self.get_id());
        if let Some(depth) = &depth {
            depth.fetch_add(1, Ordering::Relaxed);
        }
        let sent = self.cast(message);
        if sent.is_err() {
            uncount(depth.as_ref());
        }
        sent
    }

    fn tell_after<F>(&self, delay: Duration, make: F) -> JoinHandle<Result<(), MessagingErr<M>>>
    where
        F: FnOnce() -> M + Send + 'static,
    {
        let target = self.clone();
        ractor::concurrency::spawn(async move {
            ractor::concurrency::sleep(delay).await;
            target.tell(make())
        })
    }

    fn ask<T, F>(
        &self,
        make: F,
        timeout: Option<Duration>,
    ) -> impl std::future::Future<Output = Result<CallResult<T>, MessagingErr<M>>> + Send
    where
        T: Send + 'static,
        F: FnOnce(RpcReplyPort<T>) -> M,
    {
        // As ractor's `call`, but the request is queued through `tell`, before the
        // returned future is first polled.
        let (tx, rx) = ractor::concurrency::oneshot();
        let port: RpcReplyPort<T> = match timeout {
            Some(limit) => (tx, limit).into(),
            None => tx.into(),
        };
        let sent = self.tell(make(port));
        async move {
            sent?;
            Ok(match timeout {
                Some(limit) => match ractor::concurrency::timeout(limit, rx).await {
                    Ok(Ok(reply)) => CallResult::Success(reply),
                    Ok(Err(_)) => CallResult::SenderError,
                    Err(_) => CallResult::Timeout,
                },
                None => match rx.await {
                    Ok(reply) => CallResult::Success(reply),
                    Err(_) => CallResult::SenderError,
                },
            })
        }
    }
}
