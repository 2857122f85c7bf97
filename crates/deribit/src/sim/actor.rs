//! The simulator as a supervised child of the daemon (the local default), so
//! `keel run` on a fresh machine shows trades flowing with no exchange account.

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SpawnErr};

use super::{SimConfig, SimHandle};
use keel_core::child::{spawn_recorded, StartContext};
use keel_core::recorded::Recordable;

/// The simulator actor: starts listening in `pre_start`, stops in `post_stop`.
#[derive(Debug, Default)]
pub struct SimActor;

/// It takes no messages; the type exists for the recording wrapper.
#[derive(Debug)]
pub enum SimMsg {}

impl Recordable for SimMsg {
    fn kind(&self) -> &'static str {
        match *self {}
    }

    fn summary(&self) -> String {
        match *self {}
    }
}

impl SimActor {
    /// Spawns the simulator child.
    pub async fn spawn(config: SimConfig, ctx: StartContext) -> Result<ActorCell, SpawnErr> {
        spawn_recorded(SimActor, config, ctx).await
    }
}

impl Actor for SimActor {
    type Msg = SimMsg;
    type State = Option<SimHandle>;
    type Arguments = SimConfig;

    async fn pre_start(
        &self,
        _myself: ActorRef<SimMsg>,
        config: SimConfig,
    ) -> Result<Option<SimHandle>, ActorProcessingErr> {
        Ok(Some(super::start(config).await?))
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SimMsg>,
        handle: &mut Option<SimHandle>,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(handle) = handle.take() {
            handle.stop().await;
        }
        Ok(())
    }
}
