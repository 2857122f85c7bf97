//! What inspection costs per message: one actor handling 500,000 small messages,
//! sent through Keel's counted `Tell` and recorded by the `Recorded` wrapper
//! (counters, mailbox depth, summary formatted into a 64-entry ring), against the
//! same wrapper with recording off and against a bare ractor actor with plain
//! `cast` (the raw baseline), best of 5 interleaved rounds. Run:
//! `cargo bench --bench inspection`.
//!
//! The end-to-end comparison is in `benches/pipeline.rs`; this one isolates the
//! per-message price, which the pipeline pays a few times per batch of rows.
#![allow(clippy::disallowed_methods)] // the raw baseline sends with plain ractor

use std::time::{Duration, Instant};

use keel_core::mailbox::Tell;
use keel_core::recorded::{Recordable, Recorded};
use keel_core::registry::{ActorKind, Registry};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

const MESSAGES: u64 = 500_000;
const ROUNDS: usize = 5;

enum Msg {
    Item(u64),
    Done(RpcReplyPort<u64>),
}

impl Recordable for Msg {
    fn kind(&self) -> &'static str {
        match self {
            Msg::Item(_) => "Item",
            Msg::Done(_) => "Done",
        }
    }

    fn summary(&self) -> String {
        match self {
            Msg::Item(n) => format!("item {n}, first BTC-PERPETUAL #{n}"),
            Msg::Done(_) => "done".into(),
        }
    }
}

struct Sink;

impl Actor for Sink {
    type Msg = Msg;
    type State = u64;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Msg>, (): ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(
        &self,
        _: ActorRef<Msg>,
        message: Msg,
        handled: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            Msg::Item(n) => *handled += std::hint::black_box(n) & 1 | 1,
            Msg::Done(reply) => {
                let _ = reply.send(*handled);
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Raw,
    RecordingOff,
    RecordingOn,
}

async fn round(mode: Mode) -> Duration {
    let registry = Registry::new(64);
    registry.set_recording(mode == Mode::RecordingOn);
    let probe = registry
        .register("sink", ActorKind::Worker, None)
        .expect("a fresh registry");
    let spawned = match mode {
        Mode::Raw => Actor::spawn(None, Sink, ()).await,
        Mode::RecordingOff | Mode::RecordingOn => {
            Actor::spawn(None, Recorded::new(Sink, probe), ()).await
        }
    };
    let (actor, join) = spawned.expect("spawn");
    let started = Instant::now();
    for n in 0..MESSAGES {
        let sent = match mode {
            Mode::Raw => actor.cast(Msg::Item(n)),
            _ => actor.tell(Msg::Item(n)),
        };
        sent.map_err(|_| ()).expect("the sink runs");
        if n % 1024 == 0 {
            // Let the sink drain, as a real sender waits on its own I/O.
            tokio::task::yield_now().await;
        }
    }
    let handled = match mode {
        Mode::Raw => actor.call(Msg::Done, None).await,
        _ => actor.ask(Msg::Done, None).await,
    };
    let elapsed = started.elapsed();
    assert!(matches!(handled, Ok(ractor::rpc::CallResult::Success(h)) if h == MESSAGES));
    if mode == Mode::RecordingOn {
        let tree = registry.snapshot();
        assert_eq!(tree.actors[0].messages_handled, MESSAGES + 1);
        assert_eq!(tree.actors[0].mailbox_depth, 0);
    }
    actor.stop(None);
    let _ = join.await;
    elapsed
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut best = [Duration::MAX; 3];
    let modes = [Mode::Raw, Mode::RecordingOff, Mode::RecordingOn];
    round(Mode::RecordingOn).await; // warm-up
    for _ in 0..ROUNDS {
        for (i, mode) in modes.iter().enumerate() {
            best[i] = best[i].min(round(*mode).await);
        }
    }
    let per = |d: Duration| d.as_nanos() as f64 / MESSAGES as f64;
    let rate = |d: Duration| MESSAGES as f64 / d.as_secs_f64();
    println!("inspection per message: {MESSAGES} messages to one actor, best of {ROUNDS} interleaved rounds");
    println!(
        "  raw ractor cast (baseline):                  {:>7.0} ns/message, {:>10.0} messages/s",
        per(best[0]),
        rate(best[0])
    );
    println!("  Keel Tell + Recorded, recording off:         {:>7.0} ns/message, {:>10.0} messages/s ({:.2} of raw)", per(best[1]), rate(best[1]), best[0].as_secs_f64() / best[1].as_secs_f64());
    println!("  Keel Tell + Recorded, ring + counters + depth: {:>5.0} ns/message, {:>10.0} messages/s ({:.2} of raw)", per(best[2]), rate(best[2]), best[0].as_secs_f64() / best[2].as_secs_f64());
    println!(
        "  recording costs {:.0} ns per message",
        per(best[2]) - per(best[1])
    );
}
