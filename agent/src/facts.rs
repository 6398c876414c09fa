//! What the agent sees of each of its shards, for the coordinator: ledger, fence, tables,
//! server and schema. Shards are read a few at a time. The tenants of one database are read
//! together, through one engine connected to the whole database: an agent serving hundreds
//! of tenant schemas neither connects to the server once per tenant nor reads the database's
//! catalog once per tenant.

use std::collections::HashMap;

use fleetshift_common::engine::{PostgresShard, Timeouts};
use fleetshift_common::error::ExecError;
use fleetshift_common::fence::FenceToken;
use fleetshift_common::proto::v1::{ApplicationSessions, Engine, ServerFacts, ShardFacts};
use fleetshift_common::schema::Snapshot;
use futures_util::StreamExt as _;

use crate::check::{self, DatabaseFacts, ShardReport};
use crate::config::{AgentConfig, ShardConfig};
use crate::schema_checks::{self, Reported, SchemaChecks};

/// Shards (or databases of tenants) read at once.
const AT_ONCE: usize = 8;

/// Tenants of one database read at once, on its engine's connections.
const TENANTS_AT_ONCE: usize = 4;

/// What the agent sees of each of its shards now, in the configuration's order.
pub async fn read(config: &AgentConfig, schemas: &SchemaChecks) -> Vec<ShardFacts> {
    let reads: Vec<_> = groups(&config.shards)
        .into_iter()
        .map(|group| read_group(group, schemas))
        .collect();
    let mut read: Vec<(usize, ShardFacts)> = futures_util::stream::iter(reads)
        .buffered(AT_ONCE)
        .flat_map(futures_util::stream::iter)
        .collect()
        .await;
    read.sort_by_key(|(index, _)| *index);
    read.into_iter().map(|(_, facts)| facts).collect()
}

/// Shards read together, each with its place in the configuration.
enum Group<'a> {
    /// A shard of its own.
    One(usize, &'a ShardConfig),
    /// Tenant schemas of one PostgreSQL database.
    Tenants(Vec<(usize, &'a ShardConfig)>),
}

/// The shards grouped for reading: tenants by database, every other shard alone.
fn groups(shards: &[ShardConfig]) -> Vec<Group<'_>> {
    let mut groups = Vec::new();
    let mut databases: HashMap<&str, usize> = HashMap::new();
    for (index, shard) in shards.iter().enumerate() {
        // Tenants are PostgreSQL's (the configuration refuses others).
        let url = shard.database_url.expose();
        if shard.scope.schema_name().is_none() {
            groups.push(Group::One(index, shard));
            continue;
        }
        match databases.get(url) {
            Some(&at) => {
                if let Some(Group::Tenants(tenants)) = groups.get_mut(at) {
                    tenants.push((index, shard));
                }
            }
            None => {
                databases.insert(url, groups.len());
                groups.push(Group::Tenants(vec![(index, shard)]));
            }
        }
    }
    groups
}

async fn read_group(group: Group<'_>, schemas: &SchemaChecks) -> Vec<(usize, ShardFacts)> {
    match group {
        Group::One(index, shard) => vec![(index, read_one(shard, schemas).await)],
        Group::Tenants(tenants) => read_tenants(&tenants, schemas).await,
    }
}

/// What the agent sees of `shard` now, on connections of its own.
async fn read_one(shard: &ShardConfig, schemas: &SchemaChecks) -> ShardFacts {
    let report = check::inspect(shard).await;
    with_schema(shard, report, schemas, async || {
        schema_checks::read(shard).await
    })
    .await
}

/// What the agent sees of a database's tenants now, through one engine of the database.
async fn read_tenants(
    tenants: &[(usize, &ShardConfig)],
    schemas: &SchemaChecks,
) -> Vec<(usize, ShardFacts)> {
    let Some((_, first)) = tenants.first() else {
        return Vec::new();
    };
    let database = match PostgresShard::connect(&first.database_url, Timeouts::default()).await {
        Ok(database) => database,
        Err(error) => {
            return tenants
                .iter()
                .map(|(index, shard)| {
                    let report = check::unreachable(shard, &error);
                    (*index, facts(shard, report, Reported::default()))
                })
                .collect();
        }
    };
    let shared = DatabaseFacts::read(&database, first).await;
    let reads: Vec<_> = tenants
        .iter()
        .map(|&(index, shard)| read_tenant(&database, &shared, index, shard, schemas))
        .collect();
    futures_util::stream::iter(reads)
        .buffered(TENANTS_AT_ONCE)
        .collect()
        .await
}

/// What the agent sees of the tenant `shard` now, through `database`.
async fn read_tenant(
    database: &PostgresShard,
    shared: &DatabaseFacts,
    index: usize,
    shard: &ShardConfig,
    schemas: &SchemaChecks,
) -> (usize, ShardFacts) {
    let Some(tenant) = database.tenant(&shard.scope) else {
        return (index, read_one(shard, schemas).await);
    };
    let report = check::inspect_tenant(&tenant, shard, shared).await;
    let facts = with_schema(shard, report, schemas, async || {
        tenant.schema_snapshot().await
    })
    .await;
    (index, facts)
}

/// The facts of `shard` as `report` saw it, with its schema as `schemas` reports it (read by
/// `read` when due) if it was reachable.
async fn with_schema(
    shard: &ShardConfig,
    report: ShardReport,
    schemas: &SchemaChecks,
    read: impl AsyncFnOnce() -> Result<Snapshot, ExecError>,
) -> ShardFacts {
    let schema = if report.reachable {
        let version = report.latest_applied.as_deref().unwrap_or_default();
        schemas.report(shard, version, read).await
    } else {
        Reported::default()
    };
    facts(shard, report, schema)
}

/// The facts `report` and `schema` give of `shard`.
fn facts(shard: &ShardConfig, report: ShardReport, schema: Reported) -> ShardFacts {
    let engine = if shard.database_url.expose().starts_with("sqlite:") {
        Engine::Sqlite
    } else {
        Engine::Postgres
    };
    let server = ServerFacts {
        system_identifier: report.system_identifier,
        address: shard.database_url.server(),
        version: report.server_version,
        masked_url: shard.database_url.masked(),
    };
    ShardFacts {
        shard_id: report.id,
        labels: report.labels.into_iter().collect(),
        engine: engine.into(),
        current_version: report.latest_applied.unwrap_or_default(),
        fence_token: report.fence_token.map_or(0, FenceToken::get),
        reachable: report.reachable,
        unfinished_versions: report.unfinished,
        tables: report.tables,
        observed_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
        schema_fingerprint: schema.fingerprint,
        schema_snapshot: schema.snapshot,
        server: Some(server),
        lifecycle: shard.lifecycle.into(),
        applications_read: report.applications.is_some(),
        applications: report
            .applications
            .into_iter()
            .flatten()
            .map(|(application_name, sessions)| ApplicationSessions {
                application_name,
                sessions: u32::try_from(sessions).unwrap_or(u32::MAX),
            })
            .collect(),
    }
}
