//! The pooled connection a fenced transaction runs on. The transaction is opened and
//! committed by the ledger's own batches (see [`super::open`] and [`super::close`]), not by
//! the driver, so the connection must never go back to the pool with the transaction still
//! open: a session dropped before it ended (an interrupted run) closes its connection, and the
//! server rolls the transaction back.

use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, Database, Executor};

pub(crate) struct Session<DB: Database> {
    connection: PoolConnection<DB>,
    open: bool,
}

impl<DB: Database> Session<DB> {
    /// `connection`, about to open a transaction.
    pub(crate) fn new(connection: PoolConnection<DB>) -> Self {
        Self {
            connection,
            open: true,
        }
    }

    pub(crate) fn connection(&mut self) -> &mut DB::Connection {
        &mut self.connection
    }

    /// The transaction was committed: the connection goes back to the pool.
    pub(crate) fn committed(mut self) {
        self.open = false;
    }

    /// Rolls the transaction back (if the server still has one open); a connection that
    /// cannot even do that is closed.
    pub(crate) async fn roll_back(mut self)
    where
        for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    {
        let rolled_back = sqlx::raw_sql(AssertSqlSafe("ROLLBACK"))
            .execute(&mut *self.connection)
            .await;
        self.open = rolled_back.is_err();
    }
}

impl<DB: Database> Drop for Session<DB> {
    fn drop(&mut self) {
        if self.open {
            self.connection.close_on_drop();
        }
    }
}
