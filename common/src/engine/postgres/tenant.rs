//! One tenant of a database read through an engine connected to the whole database: an agent
//! serving a database's many tenant schemas reads each one's ledger, fence and schema on one
//! set of connections, instead of connecting to the server for every tenant. Every read names
//! its objects by schema, so the connections' `search_path` does not matter; nothing here
//! writes.

use crate::engine::ShardScope;
use crate::error::ExecError;
use crate::fence::FenceToken;
use crate::ledger::LedgerEntry;
use crate::schema::{self, Snapshot};

use super::PostgresShard;
use super::ledger_sql::PgLedger;

/// A tenant schema of a [`PostgresShard`]'s database, for reading.
#[derive(Debug)]
pub struct Tenant<'a> {
    database: &'a PostgresShard,
    schema: &'a str,
    ledger: PgLedger,
}

impl PostgresShard {
    /// The tenant `scope` names, read through this engine; `None` for a whole-database scope.
    #[must_use]
    pub fn tenant<'a>(&'a self, scope: &'a ShardScope) -> Option<Tenant<'a>> {
        let schema = scope.schema_name()?;
        Some(Tenant {
            database: self,
            schema,
            ledger: PgLedger::in_schema(&scope.ledger_schema()),
        })
    }
}

impl Tenant<'_> {
    /// The tenant's ledger rows; none when it has no ledger yet.
    pub async fn read_ledger(&self) -> Result<Vec<LedgerEntry>, ExecError> {
        self.database.ledger_rows(&self.ledger).await
    }

    /// The tenant's fence token.
    pub async fn current_fence(&self) -> Result<FenceToken, ExecError> {
        self.database.fence_in(&self.ledger).await
    }

    /// The tenant's schema, its objects named relative to it (as its own engine reads it).
    pub async fn schema_snapshot(&self) -> Result<Snapshot, ExecError> {
        let reading = self.database.database_error("reading the schema");
        let mut connection = self.database.pool.acquire().await.map_err(&reading)?;
        schema::postgres::read_scoped(&mut connection, Some(self.schema))
            .await
            .map_err(&reading)
    }
}
