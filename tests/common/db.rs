//! A PostgreSQL database of the test's own, dropped when the test ends.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_postgres::{Client, NoTls};

pub const PG_PORT: u16 = 5432;
/// Keel's PgBouncer (transaction pooling), started by scripts/up.
pub const PGBOUNCER_PORT: u16 = 6439;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A fresh database; dropped (with FORCE, so pooled connections do not block it)
/// when this value is dropped, even if the test panicked.
pub struct TestDb {
    pub name: String,
}

async fn admin() -> Client {
    let (client, connection) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={PG_PORT} user=postgres dbname=postgres"),
        NoTls,
    )
    .await
    .expect("PostgreSQL on 127.0.0.1:5432 (run scripts/up)");
    tokio::spawn(connection);
    client
}

impl TestDb {
    pub async fn create() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "keel_test_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        admin()
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        Self { name }
    }

    /// A URL for PgActor, direct or through PgBouncer.
    pub fn url(&self, port: u16) -> String {
        format!("postgres://postgres@127.0.0.1:{port}/{}", self.name)
    }

    /// A direct connection for the test's own checks.
    pub async fn client(&self) -> Client {
        let (client, connection) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={PG_PORT} user=postgres dbname={}",
                self.name
            ),
            NoTls,
        )
        .await
        .expect("connect to test database");
        tokio::spawn(connection);
        client
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop may run inside a runtime (or while unwinding): use a thread of its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            let _ = rt.block_on(async { admin().await.batch_execute(&sql).await });
        })
        .join();
    }
}
