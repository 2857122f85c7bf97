//! Pure restart decisions: whether an ended child restarts, and which siblings
//! restart with it.

use std::ops::Range;

pub(super) use crate::child::Exit;

use super::{Restart, Strategy};

/// What the supervisor does about an ended child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Decision {
    Restart,
    /// Leave it ended; the tree carries on.
    Leave,
    /// A permanent child cannot run: give up on the whole tree.
    GiveUp,
}

pub(super) fn decide(restart: Restart, exit: &Exit) -> Decision {
    match (restart, exit) {
        (
            Restart::Permanent,
            Exit::Failed {
                unrecoverable: true,
                ..
            },
        ) => Decision::GiveUp,
        (
            _,
            Exit::Failed {
                unrecoverable: true,
                ..
            },
        ) => Decision::Leave,
        (Restart::Permanent, _) => Decision::Restart,
        (Restart::Transient, Exit::Failed { .. }) => Decision::Restart,
        (Restart::Transient, Exit::Normal) | (Restart::Temporary, _) => Decision::Leave,
    }
}

/// The indices (in start order) that restart together with child `failed` of
/// `len`; always contains `failed`.
pub(super) fn scope(strategy: Strategy, failed: usize, len: usize) -> Range<usize> {
    match strategy {
        Strategy::OneForOne => failed..failed + 1,
        Strategy::OneForAll => 0..len,
        Strategy::RestForOne => failed..len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(unrecoverable: bool) -> Exit {
        Exit::Failed {
            reason: "boom".into(),
            unrecoverable,
            outage: false,
        }
    }

    #[test]
    fn restart_types_follow_otp() {
        let (restart, leave) = (Decision::Restart, Decision::Leave);
        assert_eq!(decide(Restart::Permanent, &Exit::Normal), restart);
        assert_eq!(decide(Restart::Permanent, &failed(false)), restart);
        assert_eq!(decide(Restart::Transient, &Exit::Normal), leave);
        assert_eq!(decide(Restart::Transient, &failed(false)), restart);
        assert_eq!(decide(Restart::Temporary, &Exit::Normal), leave);
        assert_eq!(decide(Restart::Temporary, &failed(false)), leave);
    }

    #[test]
    fn unrecoverable_failures_are_never_retried() {
        assert_eq!(decide(Restart::Permanent, &failed(true)), Decision::GiveUp);
        assert_eq!(decide(Restart::Transient, &failed(true)), Decision::Leave);
        assert_eq!(decide(Restart::Temporary, &failed(true)), Decision::Leave);
    }

    #[test]
    fn strategies_pick_their_siblings() {
        assert_eq!(scope(Strategy::OneForOne, 2, 5), 2..3);
        assert_eq!(scope(Strategy::OneForAll, 2, 5), 0..5);
        assert_eq!(scope(Strategy::RestForOne, 2, 5), 2..5);
        assert_eq!(scope(Strategy::RestForOne, 4, 5), 4..5);
    }
}
