//! bb8-postgres's manager, with connections the executor can condemn.
//!
//! bb8 only drops a connection that its manager reports broken, and
//! bb8-postgres only reports closed ones. A connection whose attempt failed or
//! timed out may be mid-protocol (a COPY cut short, a reply still in flight,
//! PgBouncer holding a half-finished transaction), so the executor poisons it and
//! the pool replaces it instead of handing it to the next caller.
//!
//! The pool tests a connection on checkout, with a round trip, only when it
//! has been idle for 500 ms or longer (`pool::Pooled`): one handed back that recently, by a
//! call that went well, and not closed since (the connection's task sees a
//! server that hangs up at once), is handed out as it is, as HikariCP's
//! `aliveBypassWindowMs` does. On a busy executor that round trip was a
//! quarter of every store's time.

use bb8::ManageConnection;
use bb8_postgres::PostgresConnectionManager;
use tokio_postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::resource::pool::Pooled;

/// A pooled client and whether it may be reused (`pool::Pooled`).
pub(super) type PgConnection = Pooled<Client>;

/// The pool's manager.
#[derive(Debug)]
pub(super) struct PgManager(pub(super) PostgresConnectionManager<MakeRustlsConnect>);

impl ManageConnection for PgManager {
    type Connection = PgConnection;
    type Error = tokio_postgres::Error;

    async fn connect(&self) -> Result<PgConnection, tokio_postgres::Error> {
        Ok(Pooled::new(self.0.connect().await?))
    }

    async fn is_valid(&self, conn: &mut PgConnection) -> Result<(), tokio_postgres::Error> {
        if conn.fresh() && !conn.is_closed() {
            return Ok(());
        }
        self.0.is_valid(conn).await
    }

    /// Asked as a connection goes back to the pool (and when reaping).
    fn has_broken(&self, conn: &mut PgConnection) -> bool {
        let closed = conn.is_closed();
        conn.broken(closed)
    }
}
