//! The environment variables that set the coordinator's configuration keys, each replacing its
//! key in the file. `FLEETSHIFT_COORDINATOR_<SECTION>_<KEY>` for all but the older names kept
//! as they were (`FLEETSHIFT_COORDINATOR_ID`, `FLEETSHIFT_LISTEN`, `FLEETSHIFT_TELEMETRY_LISTEN`,
//! `FLEETSHIFT_HEALTH_LISTEN`, `FLEETSHIFT_ETCD_ENDPOINTS`); `[[webhooks]]` is one TOML value.

use fleetshift_common::config_file::{EnvKey, EnvKind};

/// Every key of the coordinator's file, with its variable.
pub const KEYS: &[EnvKey] = &[
    EnvKey::new(
        "FLEETSHIFT_COORDINATOR_ID",
        &["coordinator_id"],
        EnvKind::Text,
    ),
    EnvKey::new("FLEETSHIFT_LISTEN", &["listen"], EnvKind::Text),
    EnvKey::new(
        "FLEETSHIFT_TELEMETRY_LISTEN",
        &["telemetry_listen"],
        EnvKind::Text,
    ),
    EnvKey::new(
        "FLEETSHIFT_HEALTH_LISTEN",
        &["health_listen"],
        EnvKind::Text,
    ),
    EnvKey::new(
        "FLEETSHIFT_COORDINATOR_WEB_LISTEN",
        &["web_listen"],
        EnvKind::Text,
    ),
    EnvKey::new(
        "FLEETSHIFT_COORDINATOR_WEB_ADVERTISE",
        &["web_advertise"],
        EnvKind::Text,
    ),
    EnvKey::new(
        "FLEETSHIFT_COORDINATOR_TRUST_DOMAIN",
        &["trust_domain"],
        EnvKind::Text,
    ),
    EnvKey::new(
        "FLEETSHIFT_COORDINATOR_HEARTBEAT",
        &["heartbeat"],
        EnvKind::Text,
    ),
    EnvKey::new(
        "FLEETSHIFT_COORDINATOR_TLS_CERTIFICATE",
        &["tls", "certificate"],
        EnvKind::Text,
    ),
    EnvKey::new(
        "FLEETSHIFT_COORDINATOR_TLS_PRIVATE_KEY",
        &["tls", "private_key"],
        EnvKind::Text,
    ),
    EnvKey::new(
        "FLEETSHIFT_COORDINATOR_TLS_TRUST_BUNDLE",
        &["tls", "trust_bundle"],
        EnvKind::Text,
    ),
    EnvKey::new(
        "FLEETSHIFT_ETCD_ENDPOINTS",
        &["store", "etcd_endpoints"],
        EnvKind::List,
    ),
    EnvKey::new(
        "FLEETSHIFT_COORDINATOR_ROLES_VIEWERS",
        &["roles", "viewers"],
        EnvKind::List,
    ),
    EnvKey::new(
        "FLEETSHIFT_COORDINATOR_ROLES_OPERATORS",
        &["roles", "operators"],
        EnvKind::List,
    ),
    EnvKey::new(
        "FLEETSHIFT_COORDINATOR_ROLES_APPROVERS",
        &["roles", "approvers"],
        EnvKind::List,
    ),
    EnvKey::new(
        "FLEETSHIFT_COORDINATOR_LIMITS_REQUESTS_PER_SECOND",
        &["limits", "requests_per_second"],
        EnvKind::Integer,
    ),
    EnvKey::new(
        "FLEETSHIFT_COORDINATOR_LIMITS_BURST",
        &["limits", "burst"],
        EnvKind::Integer,
    ),
    EnvKey::new(
        "FLEETSHIFT_COORDINATOR_LIMITS_CALLS_PER_IDENTITY",
        &["limits", "calls_per_identity"],
        EnvKind::Integer,
    ),
    EnvKey::new(
        "FLEETSHIFT_COORDINATOR_WEBHOOKS",
        &["webhooks"],
        EnvKind::Toml,
    ),
];
