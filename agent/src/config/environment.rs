//! The environment variables that set the agent's configuration keys (a container's usual
//! way), each replacing its key in the file. `FLEETSHIFT_AGENT_<SECTION>_<KEY>` for all but
//! the older names kept as they were (`FLEETSHIFT_AGENT_ID`, `FLEETSHIFT_TELEMETRY_LISTEN`,
//! `FLEETSHIFT_FACTS_REFRESH`, `FLEETSHIFT_SCHEMA_CHECK`); `[[shards]]` is one TOML value.

use fleetshift_common::config_file::{EnvKey, EnvKind};

/// Every key of the agent's file, with its variable.
pub const KEYS: &[EnvKey] = &[
    EnvKey::new("FLEETSHIFT_AGENT_ID", &["agent_id"], EnvKind::Text),
    EnvKey::new(
        "FLEETSHIFT_TELEMETRY_LISTEN",
        &["telemetry_listen"],
        EnvKind::Text,
    ),
    EnvKey::new(
        "FLEETSHIFT_AGENT_DATABASE_OUTAGE_WAIT",
        &["database_outage_wait"],
        EnvKind::Text,
    ),
    EnvKey::new(
        "FLEETSHIFT_AGENT_COORDINATOR_ADDRESS",
        &["coordinator", "address"],
        EnvKind::Text,
    ),
    EnvKey::new(
        "FLEETSHIFT_AGENT_COORDINATOR_ADDRESSES",
        &["coordinator", "addresses"],
        EnvKind::List,
    ),
    EnvKey::new(
        "FLEETSHIFT_AGENT_COORDINATOR_SERVER_NAME",
        &["coordinator", "server_name"],
        EnvKind::Text,
    ),
    EnvKey::new(
        "FLEETSHIFT_FACTS_REFRESH",
        &["coordinator", "facts_refresh"],
        EnvKind::Text,
    ),
    EnvKey::new(
        "FLEETSHIFT_SCHEMA_CHECK",
        &["coordinator", "schema_check"],
        EnvKind::Text,
    ),
    EnvKey::new(
        "FLEETSHIFT_AGENT_TLS_CERTIFICATE",
        &["tls", "certificate"],
        EnvKind::Text,
    ),
    EnvKey::new(
        "FLEETSHIFT_AGENT_TLS_PRIVATE_KEY",
        &["tls", "private_key"],
        EnvKind::Text,
    ),
    EnvKey::new(
        "FLEETSHIFT_AGENT_TLS_TRUST_BUNDLE",
        &["tls", "trust_bundle"],
        EnvKind::Text,
    ),
    EnvKey::new(
        "FLEETSHIFT_AGENT_BACKUPS_DIRECTORY",
        &["backups", "directory"],
        EnvKind::Text,
    ),
    EnvKey::new(
        "FLEETSHIFT_AGENT_BACKUPS_KEEP",
        &["backups", "keep"],
        EnvKind::Integer,
    ),
    EnvKey::new(
        "FLEETSHIFT_AGENT_BACKUPS_MAX_AGE",
        &["backups", "max_age"],
        EnvKind::Text,
    ),
    EnvKey::new(
        "FLEETSHIFT_AGENT_BACKUPS_PG_DUMP",
        &["backups", "pg_dump"],
        EnvKind::Text,
    ),
    EnvKey::new(
        "FLEETSHIFT_AGENT_BACKUPS_PG_RESTORE",
        &["backups", "pg_restore"],
        EnvKind::Text,
    ),
    EnvKey::new(
        "FLEETSHIFT_AGENT_BACKUPS_PSQL",
        &["backups", "psql"],
        EnvKind::Text,
    ),
    EnvKey::new(
        "FLEETSHIFT_AGENT_BACKUPS_LOCK_WAIT_TIMEOUT",
        &["backups", "lock_wait_timeout"],
        EnvKind::Text,
    ),
    EnvKey::new(
        "FLEETSHIFT_AGENT_REHEARSALS_MAX_CONCURRENT",
        &["rehearsals", "max_concurrent"],
        EnvKind::Integer,
    ),
    EnvKey::new(
        "FLEETSHIFT_AGENT_REHEARSALS_PG_DUMP",
        &["rehearsals", "pg_dump"],
        EnvKind::Text,
    ),
    EnvKey::new(
        "FLEETSHIFT_AGENT_REHEARSALS_PG_RESTORE",
        &["rehearsals", "pg_restore"],
        EnvKind::Text,
    ),
    EnvKey::new(
        "FLEETSHIFT_AGENT_REHEARSALS_STAGING_URL",
        &["rehearsals", "staging_url"],
        EnvKind::Text,
    ),
    EnvKey::new(
        "FLEETSHIFT_AGENT_REHEARSALS_STAGING_URL_FILE",
        &["rehearsals", "staging_url_file"],
        EnvKind::Text,
    ),
    EnvKey::new("FLEETSHIFT_AGENT_SHARDS", &["shards"], EnvKind::Toml),
];
