//! Which part of its database a PostgreSQL shard is: the whole database, or one schema of it
//! (a tenant, where a database holds many). A schema shard's revisions run with `search_path`
//! set to its schema, its ledger lives in a schema of its own (`fleetshift_<schema>`), its
//! fingerprint covers its schema alone with names relative to it (so every tenant at a version
//! has the same one), and its migrator lock is its own.

use sha2::{Digest, Sha256};

use super::postgres::DEFAULT_LEDGER_SCHEMA;
use super::postgres::MIGRATOR_LOCK_KEY;

/// The longest tenant schema name: its ledger schema's name (`fleetshift_` + it) must fit
/// PostgreSQL's 63 bytes.
pub const MAX_SCHEMA_NAME: usize = 63 - "fleetshift_".len();

/// The whole database, or one schema of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ShardScope {
    #[default]
    Database,
    Schema(String),
}

impl ShardScope {
    /// One schema, named with lower-case letters, digits and `_` (not starting with a digit),
    /// at most [`MAX_SCHEMA_NAME`] bytes, and not fleetshift's own; why not otherwise.
    pub fn schema(name: &str) -> Result<Self, String> {
        let plain = name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && name.chars().next().is_some_and(|c| !c.is_ascii_digit());
        if !plain || name.len() > MAX_SCHEMA_NAME {
            return Err(format!(
                "schema {name:?}: a tenant schema is named with lower-case letters, digits and `_` (not first), at most {MAX_SCHEMA_NAME} bytes"
            ));
        }
        if name == DEFAULT_LEDGER_SCHEMA
            || name.starts_with("fleetshift_")
            || name.starts_with("pg_")
        {
            return Err(format!(
                "schema {name:?} is fleetshift's or PostgreSQL's own, not a tenant's"
            ));
        }
        Ok(Self::Schema(name.to_owned()))
    }

    /// The tenant schema, if the shard is one.
    pub fn schema_name(&self) -> Option<&str> {
        match self {
            Self::Database => None,
            Self::Schema(name) => Some(name),
        }
    }

    /// The schema the shard's ledger lives in.
    pub fn ledger_schema(&self) -> String {
        match self {
            Self::Database => DEFAULT_LEDGER_SCHEMA.to_owned(),
            Self::Schema(name) => format!("fleetshift_{name}"),
        }
    }

    /// The connection option that puts the tenant's schema first on the search path.
    pub fn search_path(&self) -> Option<(&'static str, String)> {
        self.schema_name()
            .map(|name| ("search_path", name.to_owned()))
    }

    /// The advisory lock key that keeps other migrators off this shard: the database's, or
    /// one of the schema's own (so tenants of one database migrate side by side).
    pub fn lock_key(&self) -> i64 {
        match self {
            Self::Database => MIGRATOR_LOCK_KEY,
            Self::Schema(name) => {
                let digest = Sha256::digest(name.as_bytes());
                let mut bytes = [0_u8; 8];
                bytes.copy_from_slice(&digest[..8]);
                MIGRATOR_LOCK_KEY ^ i64::from_be_bytes(bytes)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_schema_is_a_plain_name_that_is_not_fleetshifts() {
        let tenant = ShardScope::schema("tenant_042").expect("plain");
        assert_eq!(tenant.ledger_schema(), "fleetshift_tenant_042");
        assert_eq!(
            tenant.search_path(),
            Some(("search_path", "tenant_042".to_owned()))
        );
        for bad in [
            "",
            "Tenant",
            "1st",
            "a-b",
            "a.b",
            "fleetshift",
            "fleetshift_x",
            "pg_temp",
        ] {
            assert!(ShardScope::schema(bad).is_err(), "{bad:?}");
        }
        assert!(ShardScope::schema(&"t".repeat(MAX_SCHEMA_NAME + 1)).is_err());
        assert_eq!(ShardScope::Database.ledger_schema(), "fleetshift");
    }

    #[test]
    fn each_tenant_has_a_lock_of_its_own() {
        let one = ShardScope::schema("tenant_1").expect("plain").lock_key();
        let two = ShardScope::schema("tenant_2").expect("plain").lock_key();
        assert_ne!(one, two);
        assert_ne!(one, ShardScope::Database.lock_key());
        assert_eq!(
            one,
            ShardScope::schema("tenant_1").expect("plain").lock_key()
        );
    }
}
