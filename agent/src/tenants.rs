//! Databases of tenants, one schema each: a `[[shards]]` entry with `tenants` (a `LIKE`
//! pattern) or `tenants_query` (a read-only query returning schema names) stands for every
//! such schema, each a shard of its own named `<id>.<schema>` with the entry's labels,
//! lifecycle and connection, scoped to its schema ([`ShardScope::Schema`]). They are found
//! when the agent starts ([`discover`]) and again at every facts read ([`LiveConfig`]).

use std::collections::BTreeSet;
use std::sync::{Arc, PoisonError, RwLock};

use fleetshift_common::engine::{DatabaseMessage, ShardScope};
use sqlx::{Connection, PgConnection};

use crate::config::{AgentConfig, ShardConfig};

/// Finds schemas whose names match, fleetshift's and PostgreSQL's own aside.
const MATCHING: &str = "SELECT nspname::text FROM pg_namespace
 WHERE nspname LIKE $1 AND nspname NOT LIKE 'fleetshift%' AND nspname NOT LIKE 'pg\\_%'
   AND nspname <> 'information_schema'
 ORDER BY 1";

/// How a database's tenant schemas are found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantSource {
    /// Schemas whose names match a `LIKE` pattern.
    Pattern(String),
    /// The schemas a read-only query returns.
    Query(String),
}

impl TenantSource {
    /// The source an entry names, if any; both, or an empty one, is refused.
    pub fn of(pattern: Option<String>, query: Option<String>) -> Result<Option<Self>, String> {
        match (pattern, query) {
            (None, None) => Ok(None),
            (Some(_), Some(_)) => {
                Err("set tenants (a pattern) or tenants_query, not both".to_owned())
            }
            (Some(pattern), None) if pattern.trim().is_empty() => {
                Err("tenants is empty; give a LIKE pattern such as tenant_%".to_owned())
            }
            (None, Some(query)) if query.trim().is_empty() => {
                Err("tenants_query is empty".to_owned())
            }
            (Some(pattern), None) => Ok(Some(Self::Pattern(pattern))),
            (None, Some(query)) => Ok(Some(Self::Query(query))),
        }
    }
}

/// A database whose tenant schemas are shards.
#[derive(Debug, Clone)]
pub struct TenantDatabase {
    /// The entry: its id prefixes the tenants' ids; its labels, lifecycle and connection are
    /// theirs.
    pub shard: ShardConfig,
    pub source: TenantSource,
}

/// Adds a shard for every tenant schema of `config`'s tenant databases. A schema whose name
/// cannot be a shard's scope is left out, with a warning naming it; a database that cannot be
/// read stops the agent, naming it.
pub async fn discover(config: &mut AgentConfig) -> Result<(), String> {
    for database in &config.tenant_databases {
        let tenants = tenants_of(database).await?;
        tracing::info!(shard = %database.shard.id, tenants = tenants.len(), "tenant schemas found");
        for tenant in tenants {
            if config.shards.iter().any(|shard| shard.id == tenant.id) {
                return Err(format!(
                    "shard {:?} is listed twice (a [[shards]] entry and a tenant)",
                    tenant.id
                ));
            }
            config.shards.push(tenant);
        }
    }
    Ok(())
}

/// A shard for every tenant schema of `database`, in the order its source gives them.
async fn tenants_of(database: &TenantDatabase) -> Result<Vec<ShardConfig>, String> {
    let entry = &database.shard;
    let schemas = schemas(database)
        .await
        .map_err(|why| format!("shard {:?}: finding its tenant schemas: {why}", entry.id))?;
    let mut tenants = Vec::with_capacity(schemas.len());
    for schema in schemas {
        match ShardScope::schema(&schema) {
            Ok(scope) => tenants.push(ShardConfig {
                id: format!("{}.{schema}", entry.id),
                scope,
                ..entry.clone()
            }),
            Err(why) => tracing::warn!(shard = %entry.id, %why, "tenant schema left out"),
        }
    }
    Ok(tenants)
}

/// The agent's configuration with its tenant shards as last found. The schemas are found
/// again at every facts read ([`Self::refreshed`]): a tenant created while the agent runs
/// becomes a shard at its next announcement, one dropped stops being one.
#[derive(Debug)]
pub struct LiveConfig {
    current: RwLock<Arc<AgentConfig>>,
}

impl LiveConfig {
    pub fn new(config: Arc<AgentConfig>) -> Self {
        Self {
            current: RwLock::new(config),
        }
    }

    /// The configuration as it stands.
    pub fn current(&self) -> Arc<AgentConfig> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The configuration with its tenants found again, which becomes the current one when
    /// they changed. A database that cannot be read now keeps the tenants it had (logged).
    pub async fn refreshed(&self) -> Arc<AgentConfig> {
        let current = self.current();
        if current.tenant_databases.is_empty() {
            return current;
        }
        let mut fresh = AgentConfig::clone(&current);
        fresh
            .shards
            .retain(|shard| shard.scope.schema_name().is_none());
        for database in &current.tenant_databases {
            match tenants_of(database).await {
                Ok(tenants) => {
                    for tenant in tenants {
                        if fresh.shards.iter().any(|shard| shard.id == tenant.id) {
                            tracing::warn!(shard = %tenant.id, "a new tenant schema has the id of another shard; left out");
                        } else {
                            fresh.shards.push(tenant);
                        }
                    }
                }
                Err(why) => {
                    tracing::warn!(%why, "cannot find the tenant schemas again; that database's tenants stay as they were");
                    let prefix = format!("{}.", database.shard.id);
                    fresh.shards.extend(
                        current
                            .shards
                            .iter()
                            .filter(|shard| {
                                shard.scope.schema_name().is_some() && shard.id.starts_with(&prefix)
                            })
                            .cloned(),
                    );
                }
            }
        }
        let ids = |config: &AgentConfig| -> BTreeSet<String> {
            config.shards.iter().map(|shard| shard.id.clone()).collect()
        };
        let (before, after) = (ids(&current), ids(&fresh));
        if before == after {
            return current;
        }
        let added: Vec<&String> = after.difference(&before).collect();
        let removed: Vec<&String> = before.difference(&after).collect();
        tracing::info!(?added, ?removed, "tenant schemas changed");
        let fresh = Arc::new(fresh);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::clone(&fresh);
        fresh
    }
}

/// The schema names `database`'s source gives.
async fn schemas(database: &TenantDatabase) -> Result<Vec<String>, String> {
    let url = &database.shard.database_url;
    let mut connection = PgConnection::connect(url.expose())
        .await
        .map_err(|error| url.scrub(&DatabaseMessage(&error).to_string()))?;
    let found = match &database.source {
        TenantSource::Pattern(pattern) => {
            sqlx::query_scalar(MATCHING)
                .bind(pattern)
                .fetch_all(&mut connection)
                .await
        }
        TenantSource::Query(query) => {
            let mut transaction = connection
                .begin()
                .await
                .map_err(|error| error.to_string())?;
            let read_only = sqlx::query("SET TRANSACTION READ ONLY")
                .execute(&mut *transaction)
                .await;
            match read_only {
                Ok(_) => {
                    sqlx::query_scalar(sqlx::AssertSqlSafe(query.clone()))
                        .fetch_all(&mut *transaction)
                        .await
                }
                Err(error) => Err(error),
            }
        }
    };
    let _ = connection.close().await;
    found.map_err(|error| DatabaseMessage(&error).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_names_its_tenants_one_way() {
        assert_eq!(TenantSource::of(None, None), Ok(None));
        assert_eq!(
            TenantSource::of(Some("tenant_%".to_owned()), None),
            Ok(Some(TenantSource::Pattern("tenant_%".to_owned())))
        );
        let both = TenantSource::of(Some("t%".to_owned()), Some("SELECT 1".to_owned()));
        assert!(both.is_err_and(|why| why.contains("not both")));
        assert!(TenantSource::of(Some(" ".to_owned()), None).is_err());
        assert!(TenantSource::of(None, Some(String::new())).is_err());
    }
}
