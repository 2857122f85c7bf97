//! bb8-postgres's manager, with connections the executor can condemn.
//!
//! bb8 only drops a connection that its manager reports broken, and
//! bb8-postgres only reports closed ones. A connection whose attempt failed or
//! timed out may be mid-protocol (a COPY cut short, a reply still in flight,
//! PgBouncer holding a half-finished transaction), so the executor poisons it and
//! the pool replaces it instead of handing it to the next caller.
//!
//! The pool tests a connection on checkout, with a round trip, only when it
//! has been idle for `FRESH` or longer: one handed back that recently, by a
//! call that went well, and not closed since (the connection's task sees a
//! server that hangs up at once), is handed out as it is, as HikariCP's
//! `aliveBypassWindowMs` does. On a busy executor that round trip was a
//! quarter of every store's time.

use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use bb8::ManageConnection;
use bb8_postgres::PostgresConnectionManager;
use tokio_postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

/// A pooled client and whether it may be reused.
#[derive(Debug)]
pub(super) struct PgConnection {
    client: Client,
    poisoned: bool,
    /// When it last came back to the pool whole.
    returned: Option<Instant>,
}

/// A connection handed back this recently is not tested again on checkout.
const FRESH: Duration = Duration::from_millis(500);

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
            returned: None,
        })
    }

    async fn is_valid(&self, conn: &mut PgConnection) -> Result<(), tokio_postgres::Error> {
        let fresh = conn.returned.take().is_some_and(|at| at.elapsed() < FRESH);
        if fresh && !conn.client.is_closed() {
            return Ok(());
        }
        self.0.is_valid(&mut conn.client).await
    }

    /// Asked as a connection goes back to the pool (and when reaping).
    fn has_broken(&self, conn: &mut PgConnection) -> bool {
        let broken = conn.poisoned || conn.client.is_closed();
        if !broken {
            conn.returned = Some(Instant::now());
        }
        broken
    }
}
