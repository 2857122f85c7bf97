//! bb8-postgres's manager, with connections the executor can condemn.
//!
//! bb8 only drops a connection that its manager reports broken, and
//! bb8-postgres only reports closed ones. A connection whose attempt failed or
//! timed out may be mid-protocol (a COPY cut short, a reply still in flight,
//! PgBouncer holding a half-finished transaction), so the executor poisons it and
//! the pool replaces it instead of handing it to the next caller.

use std::ops::{Deref, DerefMut};

use bb8::ManageConnection;
use bb8_postgres::PostgresConnectionManager;
use tokio_postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

/// A pooled client and whether it may be reused.
#[derive(Debug)]
pub(super) struct PgConnection {
    client: Client,
    poisoned: bool,
}

impl PgConnection {
    /// Never return this connection to the pool.
    pub(super) fn poison(&mut self) {
        self.poisoned = true;
    }
}

impl Deref for PgConnection {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl DerefMut for PgConnection {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// The pool's manager.
#[derive(Debug)]
pub(super) struct PgManager(pub(super) PostgresConnectionManager<MakeRustlsConnect>);

impl ManageConnection for PgManager {
    type Connection = PgConnection;
    type Error = tokio_postgres::Error;

    async fn connect(&self) -> Result<PgConnection, tokio_postgres::Error> {
        Ok(PgConnection {
            client: self.0.connect().await?,
            poisoned: false,
        })
    }

    async fn is_valid(&self, conn: &mut PgConnection) -> Result<(), tokio_postgres::Error> {
        self.0.is_valid(&mut conn.client).await
    }

    fn has_broken(&self, conn: &mut PgConnection) -> bool {
        conn.poisoned || conn.client.is_closed()
    }
}
