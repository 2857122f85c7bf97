//! Versioned schema migrations, embedded in the binary and applied in order.
//!
//! Applied at PgActor's first connect and by `keel migrate`. One transaction
//! holding an advisory lock applies every pending migration, so concurrent Keel
//! instances cannot race, and a failed migration leaves nothing half-applied.

use tokio_postgres::types::Type;
use tokio_postgres::Client;

/// One schema change.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Applied in increasing order; never reused.
    pub version: i32,
    /// Short description.
    pub name: &'static str,
    /// The SQL (several statements allowed).
    pub sql: &'static str,
}

/// Every migration Keel knows, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "market_data",
        sql: include_str!("migrations/V001__market_data.sql"),
    },
    Migration {
        version: 2,
        name: "trade_gaps",
        sql: include_str!("migrations/V002__trade_gaps.sql"),
    },
    Migration {
        version: 3,
        name: "candle_progress",
        sql: include_str!("migrations/V003__candle_progress.sql"),
    },
    Migration {
        version: 4,
        name: "trade_fidelity",
        sql: include_str!("migrations/V004__trade_fidelity.sql"),
    },
    Migration {
        version: 5,
        name: "orders",
        sql: include_str!("migrations/V005__orders.sql"),
    },
    Migration {
        version: 6,
        name: "intent_deadline",
        sql: include_str!("migrations/V006__intent_deadline.sql"),
    },
    Migration {
        version: 7,
        name: "fold_fences",
        sql: include_str!("migrations/V007__fold_fences.sql"),
    },
];

/// Any constant works; it only has to be the same for every Keel.
const LOCK_KEY: i64 = 0x006b_6565_6c6d_6967; // "keelmig"

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The database said no, or the connection failed.
    #[error(transparent)]
    Driver(#[from] tokio_postgres::Error),
    /// An applied migration's SQL is no longer what this binary carries.
    #[error("migration {version} was changed after it was applied (checksum {applied} in the database, {ours} here)")]
    Changed {
        /// The migration.
        version: i32,
        /// Checksum recorded at application.
        applied: String,
        /// Checksum of the embedded SQL.
        ours: String,
    },
    /// The database has a migration this binary does not know: it is older than
    /// the schema.
    #[error("the database has schema version {version}, newer than this Keel knows ({known})")]
    Newer {
        /// The unknown version.
        version: i32,
        /// The newest version this binary knows.
        known: i32,
    },
}

/// Applies pending migrations; returns the versions applied now.
pub async fn migrate(client: &mut Client) -> Result<Vec<i32>, MigrateError> {
    let tx = client.transaction().await?;
    // `IF NOT EXISTS` would otherwise log a NOTICE on every start.
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .await?;
    tx.execute_typed(
        "SELECT pg_advisory_xact_lock($1)",
        &[(&LOCK_KEY, Type::INT8)],
    )
    .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS keel_schema_migrations (
            version    integer PRIMARY KEY,
            name       text NOT NULL,
            checksum   text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let rows = tx
        .query_typed("SELECT version, checksum FROM keel_schema_migrations", &[])
        .await?;
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    let mut applied_before = std::collections::BTreeMap::new();
    for row in rows {
        let version: i32 = row.try_get(0)?;
        let checksum: String = row.try_get(1)?;
        if version > known {
            return Err(MigrateError::Newer { version, known });
        }
        applied_before.insert(version, checksum);
    }
    let mut applied_now = Vec::new();
    for migration in MIGRATIONS {
        let ours = checksum(migration.sql);
        match applied_before.get(&migration.version) {
            Some(applied) if *applied == ours => continue,
            Some(applied) => {
                return Err(MigrateError::Changed {
                    version: migration.version,
                    applied: applied.clone(),
                    ours,
                })
            }
            None => {}
        }
        tx.batch_execute(migration.sql).await?;
        tx.execute_typed(
            "INSERT INTO keel_schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[
                (&migration.version, Type::INT4),
                (&migration.name, Type::TEXT),
                (&ours, Type::TEXT),
            ],
        )
        .await?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "Migration applied."
        );
        applied_now.push(migration.version);
    }
    tx.commit().await?;
    Ok(applied_now)
}

/// FNV-1a, 64 bits: stable across builds and platforms, no dependency.
fn checksum(sql: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in sql.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_and_checksums_are_stable() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
        assert_eq!(checksum("SELECT 1"), checksum("SELECT 1"));
        assert_ne!(checksum("SELECT 1"), checksum("SELECT 2"));
        assert_eq!(checksum(""), "cbf29ce484222325");
    }
}
