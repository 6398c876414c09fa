//! Agent configuration: defaults, then the TOML file, then environment overrides; the raw
//! file is validated into [`AgentConfig`] before anything uses it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fleetshift_common::config_file::{ConfigError, read_toml_with_env};
use fleetshift_common::database_tls::{self, TlsSettings};
use fleetshift_common::engine::{self, Connected, ShardScope, Timeouts};
use fleetshift_common::error::ExecError;
use fleetshift_common::proto::v1::ShardLifecycle;
use fleetshift_common::rollout_names::parse_lifecycle;
use fleetshift_common::secrets::DatabaseUrl;
use fleetshift_common::tls::channel::server_name_of;
use fleetshift_common::tls::mtls::{TlsError, TlsFiles};
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::duties::backup::BackupSettings;
use crate::outage::DEFAULT_OUTAGE_WAIT;
use crate::tenants::{TenantDatabase, TenantSource};

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    agent_id: Option<String>,
    /// Where `/metrics` and the health probes are served, e.g. "0.0.0.0:9465" (off when unset).
    telemetry_listen: Option<String>,
    coordinator: Option<RawCoordinator>,
    tls: Option<TlsFiles>,
    backups: Option<RawBackups>,
    rehearsals: Option<RawRehearsals>,
    /// How long a run waits for a shard's database server that went away (a restart, a
    /// failover) before the shard fails, e.g. "2m" (default).
    database_outage_wait: Option<String>,
    #[serde(default)]
    shards: Vec<RawShard>,
}

/// `[backups]`: where verified backups go and how many are kept.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackups {
    /// Each shard's backups go to `<directory>/<shard>/` (relative to the file's directory).
    directory: PathBuf,
    /// Backups kept per shard (default 5).
    keep: Option<usize>,
    /// Backups older than this are removed, e.g. "720h".
    max_age: Option<String>,
    /// The `pg_dump` program (default: `pg_dump` on the PATH).
    pg_dump: Option<PathBuf>,
    /// The `pg_restore` program (default: `pg_restore` on the PATH).
    pg_restore: Option<PathBuf>,
    /// The `psql` program restores run through (default: `psql` on the PATH).
    psql: Option<PathBuf>,
    /// How long pg_dump may wait for its table locks (default 30s).
    lock_wait_timeout: Option<String>,
}

/// `[rehearsals]`: how this host builds the sampled copies rehearsals run on.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRehearsals {
    /// Rehearsals running at once on this host (default 1); more wait their turn.
    max_concurrent: Option<usize>,
    /// The `pg_dump` that copies a shard's schema (default: `[backups]`'s, else the PATH's).
    pg_dump: Option<PathBuf>,
    /// The `pg_restore` that loads it (default: `[backups]`'s, else the PATH's).
    pg_restore: Option<PathBuf>,
    /// A database on a staging server whose user may create databases: the scratch copies are
    /// built there instead of beside each shard (inline, discouraged: the file holds a secret).
    staging_url: Option<String>,
    /// A file holding that URL.
    staging_url_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCoordinator {
    /// `https://host:port` of one coordinator replica.
    address: Option<String>,
    /// Several replicas, tried in turn: when one is lost the agent moves to the next.
    addresses: Option<Vec<String>>,
    /// The name the coordinators' certificates are checked against (default: each address's
    /// host).
    server_name: Option<String>,
    /// How often the agent sends fresh shard facts while it runs no assignment (default 60s).
    facts_refresh: Option<String>,
    /// How often the agent reads each shard's schema for its fingerprint (default 10m).
    schema_check: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShard {
    id: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// `active` (default), `suspended`, `provisioning` or `retired`: only active shards are
    /// planned; an operator's `fleetshift lifecycle` overrides it.
    lifecycle: Option<String>,
    /// Inline URL (discouraged: the file then holds a secret).
    database_url: Option<String>,
    /// A file holding the URL, e.g. a mounted secret.
    database_url_file: Option<PathBuf>,
    /// Replicas whose replay lag a throttling plan also waits on (ones the shard's server does
    /// not list in `pg_stat_replication`: cascading, or fed from an archive), inline…
    #[serde(default)]
    throttle_replicas: Vec<String>,
    /// …or each in a file.
    #[serde(default)]
    throttle_replica_files: Vec<PathBuf>,
    /// TLS to the shard's server (`disable` … `verify-full`), for the agent's connections and
    /// the client programs it runs alike; the URL's own parameters work too.
    sslmode: Option<String>,
    /// The CA certificates the server's certificate must chain to (relative to this file).
    sslrootcert: Option<PathBuf>,
    /// The agent's client certificate…
    sslcert: Option<PathBuf>,
    /// …and its key (0600, or 0640 owned by root).
    sslkey: Option<PathBuf>,
    /// The database holds tenants, one schema each: every schema whose name matches this
    /// `LIKE` pattern (e.g. `tenant_%`) is a shard of its own, `<id>.<schema>`.
    tenants: Option<String>,
    /// …or every schema this read-only query returns (one text column).
    tenants_query: Option<String>,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub agent_id: String,
    /// How to reach the fleet; `None` when the agent only checks its shards.
    pub coordinator: Option<CoordinatorLink>,
    pub shards: Vec<ShardConfig>,
    /// Databases whose tenant schemas are shards, found when the agent starts and again at
    /// every facts read ([`crate::tenants`]).
    pub tenant_databases: Vec<TenantDatabase>,
    /// Where backups go; `None` when the file has no `[backups]` (plans that require a backup
    /// then fail on this agent's shards, saying so).
    pub backups: Option<BackupSettings>,
    /// How rehearsals run on this host.
    pub rehearsals: RehearsalLimits,
    /// Where the telemetry endpoint listens; `None` serves none.
    pub telemetry_listen: Option<SocketAddr>,
    /// How long a run waits for a shard's database server that went away before the shard
    /// fails.
    pub database_outage_wait: Duration,
}

/// How rehearsals run on this host: at most `max_concurrent` at once (the slots), with these
/// client programs.
#[derive(Debug, Clone)]
pub struct RehearsalLimits {
    pub max_concurrent: usize,
    pub pg_dump: PathBuf,
    pub pg_restore: PathBuf,
    /// Where the scratch copies are built; `None`: beside each shard, on its own server.
    pub staging: Option<DatabaseUrl>,
    pub slots: Arc<Semaphore>,
}

impl RehearsalLimits {
    fn new(max_concurrent: usize, pg_dump: PathBuf, pg_restore: PathBuf) -> Self {
        Self {
            max_concurrent,
            pg_dump,
            pg_restore,
            staging: None,
            slots: Arc::new(Semaphore::new(max_concurrent)),
        }
    }
}

impl Default for RehearsalLimits {
    fn default() -> Self {
        Self::new(1, PathBuf::from("pg_dump"), PathBuf::from("pg_restore"))
    }
}

/// A database URL given inline or in a file (relative to `base`); `None` when neither is.
fn secret_url(
    inline: Option<String>,
    file: Option<PathBuf>,
    base: &Path,
    what: &str,
) -> Result<Option<String>, String> {
    match (inline, file) {
        (Some(url), None) => Ok(Some(url)),
        (None, Some(file)) => {
            let file = base.join(file);
            let text = std::fs::read_to_string(&file)
                .map_err(|error| format!("{what}: cannot read {}: {error}", file.display()))?;
            Ok(Some(text.trim().to_owned()))
        }
        (Some(_), Some(_)) => Err(format!(
            "{what}: set database_url or database_url_file, not both"
        )),
        (None, None) => Ok(None),
    }
}

fn rehearsal_limits(
    raw: Option<RawRehearsals>,
    backups: Option<&BackupSettings>,
    base: &Path,
) -> Result<RehearsalLimits, String> {
    let raw = raw.unwrap_or(RawRehearsals {
        max_concurrent: None,
        pg_dump: None,
        pg_restore: None,
        staging_url: None,
        staging_url_file: None,
    });
    let staging = secret_url(
        raw.staging_url,
        raw.staging_url_file,
        base,
        "[rehearsals] staging",
    )?;
    if let Some(url) = &staging
        && !url.starts_with("postgres")
    {
        return Err("[rehearsals] staging_url must be a PostgreSQL URL (postgres://…)".to_owned());
    }
    if let Some(url) = &staging {
        database_tls::check(url).map_err(|error| format!("[rehearsals] staging: {error}"))?;
    }
    let max_concurrent = raw.max_concurrent.unwrap_or(1);
    if max_concurrent == 0 {
        return Err("[rehearsals] max_concurrent must be at least 1".to_owned());
    }
    let pg_dump = raw
        .pg_dump
        .or_else(|| backups.map(|backups| backups.pg_dump.clone()))
        .unwrap_or_else(|| PathBuf::from("pg_dump"));
    let pg_restore = raw
        .pg_restore
        .or_else(|| backups.map(|backups| backups.pg_restore.clone()))
        .unwrap_or_else(|| PathBuf::from("pg_restore"));
    let mut limits = RehearsalLimits::new(max_concurrent, pg_dump, pg_restore);
    limits.staging = staging.map(DatabaseUrl::new);
    Ok(limits)
}

/// The coordinator replicas to hold a session with (any one at a time), over mutual TLS.
#[derive(Debug, Clone)]
pub struct CoordinatorLink {
    /// At least one; the agent starts with the first and moves on when a session is lost.
    pub endpoints: Vec<CoordinatorEndpoint>,
    pub tls: TlsFiles,
    /// How often fresh shard facts are sent while no assignment runs.
    pub facts_refresh: Duration,
    /// How often each shard's schema is read for its fingerprint.
    pub schema_check: Duration,
}

/// Fresh facts every minute: plans see tables in use as of the last minute or so.
pub const DEFAULT_FACTS_REFRESH: Duration = Duration::from_secs(60);

/// A shard's schema read every ten minutes: drift shows within that.
pub const DEFAULT_SCHEMA_CHECK: Duration = Duration::from_secs(600);

/// One replica: where it listens and the name its certificate must carry.
#[derive(Debug, Clone)]
pub struct CoordinatorEndpoint {
    pub address: String,
    pub server_name: String,
}

impl CoordinatorEndpoint {
    /// `address`, checked against `server_name` or else the address's own host.
    pub fn new(address: String, server_name: Option<&str>) -> Result<Self, TlsError> {
        let server_name = match server_name {
            Some(name) => name.to_owned(),
            None => server_name_of(&address)?,
        };
        Ok(Self {
            address,
            server_name,
        })
    }
}

#[derive(Debug, Clone)]
pub struct ShardConfig {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    /// Its lifecycle as this configuration gives it.
    pub lifecycle: ShardLifecycle,
    pub database_url: DatabaseUrl,
    /// Replicas whose replay lag a throttling plan waits on besides the attached ones.
    pub throttle_replicas: Vec<DatabaseUrl>,
    /// The whole database, or one tenant schema of it.
    pub scope: ShardScope,
}

impl ShardConfig {
    /// How messages name the shard: its id and its server (`orders-7 (db-3:5432)`), never
    /// its URL.
    pub fn display_name(&self) -> String {
        format!("{} ({})", self.id, self.database_url.server())
    }

    /// Connects to the shard, named by [`ShardConfig::display_name`], in its scope.
    pub async fn connect(&self, timeouts: Timeouts) -> Result<Connected, ExecError> {
        engine::connect_scoped(
            self.display_name(),
            &self.database_url,
            timeouts,
            self.scope.clone(),
        )
        .await
    }

    /// Why a duty or request that works on the whole database cannot be done for this shard,
    /// when it is one tenant schema of it.
    pub fn whole_database_only(&self, what: &str) -> Result<(), String> {
        match self.scope.schema_name() {
            None => Ok(()),
            Some(schema) => Err(format!(
                "shard {} is tenant schema {schema} of its database: {what} works on a whole database, not one tenant",
                self.id
            )),
        }
    }
}

impl AgentConfig {
    /// Reads `path`, each key set in the environment replacing the file's
    /// ([`environment::KEYS`]).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig =
            read_toml_with_env(path, "agent configuration", environment::KEYS, |variable| {
                std::env::var(variable).ok()
            })?;
        let agent_id = raw.agent_id;
        let telemetry_listen = raw.telemetry_listen;
        let base = path.parent().unwrap_or(Path::new("."));
        let invalid = |message: String| {
            ConfigError::new(path, format!("invalid agent configuration: {message}"))
        };
        let coordinator = coordinator_link(raw.coordinator, raw.tls, base).map_err(invalid)?;
        let backups = raw
            .backups
            .map(|backups| backup_settings(backups, base))
            .transpose()
            .map_err(invalid)?;
        let rehearsals =
            rehearsal_limits(raw.rehearsals, backups.as_ref(), base).map_err(invalid)?;
        let database_outage_wait = match raw.database_outage_wait.as_deref() {
            None => DEFAULT_OUTAGE_WAIT,
            Some(text) => fleetshift_common::duration::parse(text)
                .map_err(|error| invalid(format!("database_outage_wait: {error}")))?,
        };
        let mut config = Self::validate(raw.shards, agent_id, base).map_err(invalid)?;
        config.database_outage_wait = database_outage_wait;
        config.coordinator = coordinator;
        config.backups = backups;
        config.rehearsals = rehearsals;
        config.telemetry_listen = telemetry_listen
            .map(|address| {
                address.parse().map_err(|_| {
                    invalid(format!(
                        "telemetry_listen = {address:?} is not an address like 0.0.0.0:9465"
                    ))
                })
            })
            .transpose()?;
        Ok(config)
    }

    fn validate(
        raw_shards: Vec<RawShard>,
        agent_id: Option<String>,
        base: &Path,
    ) -> Result<Self, String> {
        let agent_id = agent_id
            .filter(|id| !id.trim().is_empty())
            .ok_or("agent_id is missing (set it in the file or FLEETSHIFT_AGENT_ID)")?;
        if raw_shards.is_empty() {
            return Err("no [[shards]]: an agent serves at least one shard".to_owned());
        }
        let mut shards: Vec<ShardConfig> = Vec::with_capacity(raw_shards.len());
        let mut tenant_databases = Vec::new();
        for raw in raw_shards {
            let taken = shards.iter().any(|shard| shard.id == raw.id)
                || tenant_databases
                    .iter()
                    .any(|database: &TenantDatabase| database.shard.id == raw.id);
            if taken {
                return Err(format!("shard {:?} is listed twice", raw.id));
            }
            let what = format!("shard {:?}", raw.id);
            let url = secret_url(raw.database_url, raw.database_url_file, base, &what)?
                .ok_or_else(|| format!("{what}: database_url_file (or database_url) is missing"))?;
            let tls = TlsSettings {
                sslmode: raw.sslmode,
                sslrootcert: raw.sslrootcert,
                sslcert: raw.sslcert,
                sslkey: raw.sslkey,
            };
            let url = database_tls::apply(&url, &tls, base)
                .map_err(|error| format!("{what}: {error}"))?;
            let mut throttle_replicas: Vec<DatabaseUrl> = raw
                .throttle_replicas
                .into_iter()
                .map(DatabaseUrl::new)
                .collect();
            for file in raw.throttle_replica_files {
                let replica = format!("{what}: throttle_replica_files");
                if let Some(url) = secret_url(None, Some(file), base, &replica)? {
                    throttle_replicas.push(DatabaseUrl::new(url));
                }
            }
            if let Some(other) = throttle_replicas
                .iter()
                .find(|url| !url.expose().starts_with("postgres"))
            {
                return Err(format!(
                    "{what}: throttle replica {} is not a postgres:// URL",
                    other.masked()
                ));
            }
            for replica in &throttle_replicas {
                database_tls::check(replica.expose()).map_err(|error| {
                    format!("{what}: throttle replica {}: {error}", replica.server())
                })?;
            }
            let lifecycle = match raw.lifecycle.as_deref() {
                None => ShardLifecycle::Active,
                Some(name) => parse_lifecycle(name).map_err(|why| format!("{what}: {why}"))?,
            };
            let shard = ShardConfig {
                id: raw.id,
                labels: raw.labels,
                lifecycle,
                database_url: DatabaseUrl::new(url),
                throttle_replicas,
                scope: ShardScope::Database,
            };
            match TenantSource::of(raw.tenants, raw.tenants_query)
                .map_err(|why| format!("{what}: {why}"))?
            {
                Some(source) => {
                    if !shard.database_url.expose().starts_with("postgres") {
                        return Err(format!("{what}: tenant schemas need PostgreSQL"));
                    }
                    tenant_databases.push(TenantDatabase { shard, source });
                }
                None => shards.push(shard),
            }
        }
        Ok(Self {
            agent_id,
            coordinator: None,
            shards,
            tenant_databases,
            backups: None,
            rehearsals: RehearsalLimits::default(),
            telemetry_listen: None,
            database_outage_wait: DEFAULT_OUTAGE_WAIT,
        })
    }
}

fn backup_settings(raw: RawBackups, base: &Path) -> Result<BackupSettings, String> {
    let duration = |name: &str, text: Option<String>| {
        text.map(|text| {
            fleetshift_common::duration::parse(&text)
                .map_err(|error| format!("[backups] {name}: {error}"))
        })
        .transpose()
    };
    if raw.keep == Some(0) {
        return Err(
            "[backups] keep must be at least 1 (the backup just taken is always kept)".to_owned(),
        );
    }
    Ok(BackupSettings {
        directory: base.join(raw.directory),
        keep: raw.keep.unwrap_or(5),
        max_age: duration("max_age", raw.max_age)?,
        pg_dump: raw.pg_dump.unwrap_or_else(|| PathBuf::from("pg_dump")),
        pg_restore: raw
            .pg_restore
            .unwrap_or_else(|| PathBuf::from("pg_restore")),
        psql: raw.psql.unwrap_or_else(|| PathBuf::from("psql")),
        lock_wait_timeout: duration("lock_wait_timeout", raw.lock_wait_timeout)?
            .unwrap_or(Duration::from_secs(30)),
    })
}

fn coordinator_link(
    coordinator: Option<RawCoordinator>,
    tls: Option<TlsFiles>,
    base: &Path,
) -> Result<Option<CoordinatorLink>, String> {
    let (coordinator, tls) = match (coordinator, tls) {
        (None, None) => return Ok(None),
        (Some(coordinator), Some(tls)) => (coordinator, tls),
        (Some(_), None) => {
            return Err(
                "[coordinator] needs a [tls] section (certificate, private_key, trust_bundle)"
                    .to_owned(),
            );
        }
        (None, Some(_)) => return Err("[tls] is only used with a [coordinator] section".to_owned()),
    };
    let addresses = match (coordinator.address, coordinator.addresses) {
        (Some(address), None) => vec![address],
        (None, Some(addresses)) if !addresses.is_empty() => addresses,
        (None, Some(_)) => {
            return Err("[coordinator] addresses is empty: list at least one replica".to_owned());
        }
        (None, None) => {
            return Err(
                "[coordinator] needs address (or addresses, for several replicas)".to_owned(),
            );
        }
        (Some(_), Some(_)) => {
            return Err("[coordinator] set address or addresses, not both".to_owned());
        }
    };
    let endpoints = addresses
        .into_iter()
        .map(|address| {
            CoordinatorEndpoint::new(address, coordinator.server_name.as_deref())
                .map_err(|error| format!("[coordinator] {error}"))
        })
        .collect::<Result<_, _>>()?;
    Ok(Some(CoordinatorLink {
        endpoints,
        tls: tls.relative_to(base),
        facts_refresh: interval(
            "facts_refresh",
            coordinator.facts_refresh.as_deref(),
            DEFAULT_FACTS_REFRESH,
        )?,
        schema_check: interval(
            "schema_check",
            coordinator.schema_check.as_deref(),
            DEFAULT_SCHEMA_CHECK,
        )?,
    }))
}

/// `[coordinator] name`: a duration above zero, or `default` when not set.
fn interval(name: &str, text: Option<&str>, default: Duration) -> Result<Duration, String> {
    let Some(text) = text else {
        return Ok(default);
    };
    let interval = fleetshift_common::duration::parse(text)
        .map_err(|error| format!("[coordinator] {name}: {error}"))?;
    if interval.is_zero() {
        return Err(format!("[coordinator] {name} must be longer than zero"));
    }
    Ok(interval)
}

pub mod environment;

#[cfg(test)]
mod tests;
