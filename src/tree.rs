//! Which children a configuration puts in the tree, and their registry names.

use keel_actors::resource::pg::Postgres;
use keel_actors::resource::redis::Redis;

use crate::config::Config;
use crate::supervisor::ChildSpec;

/// PgActor's registry name.
pub const PG: &str = "pg";
/// RedisActor's registry name.
pub const REDIS: &str = "redis";

/// Every child `config` asks for, in start order: resources before the services
/// that use them.
pub fn children(config: &Config) -> Vec<ChildSpec> {
    vec![resources::postgres(config), resources::redis(config)]
}

mod resources {
    use super::*;

    pub(super) fn postgres(config: &Config) -> ChildSpec {
        let pg = config.postgres.clone();
        ChildSpec::resource(PG, move |ctx| Postgres::spawn(pg.clone(), ctx))
    }

    pub(super) fn redis(config: &Config) -> ChildSpec {
        let redis = config.redis.clone();
        ChildSpec::resource(REDIS, move |ctx| Redis::spawn(redis.clone(), ctx))
    }
}
