//! The supervision tree: a root supervisor that starts its children in order,
//! restarts them by policy, gives up when they fail too often, and drains them in
//! reverse order on shutdown.
//!
//! ractor supplies the actors and the supervision links; everything OTP-like
//! (strategies, intensity, backoff, ordered drain) is built here, because ractor's
//! default supervisor behaviour is to stop the parent when any child ends.

mod actor;
mod config;
mod intensity;
mod policy;
mod report;
mod spec;

pub use actor::{ChildEvent, RestartRefused, TreeExit};
pub use actor::{Supervisor, SupervisorArgs, SupervisorMsg};
pub use config::SupervisorConfig;
pub use report::{ShutdownReport, StopOutcome, StoppedChild};
pub use spec::{ChildSpec, Restart, Stage, Strategy};

pub use crate::registry::ActorKind;
