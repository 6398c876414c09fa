//! Schema baselines on this host, at an operator's request relayed by the coordinator: take
//! one of a shard (exactly at the version, as the set describes it), or verify one on the
//! shard's server (or the rehearsals' staging server) with two scratch databases. Both use the
//! `pg_dump` that copies schemas for rehearsals.

use fleetshift_common::proto::v1::{
    BaselineVerification, ErrorDetail, ErrorKind, SchemaBaseline, TakeSchemaBaseline,
    VerifySchemaBaseline,
};
use fleetshift_common::schema_baseline::{self, SchemaBaselineError};

use crate::assignment::{exec_failure, unpack};
use crate::config::{AgentConfig, ShardConfig};

fn failure(kind: ErrorKind, message: String) -> ErrorDetail {
    ErrorDetail {
        kind: kind.into(),
        message,
    }
}

fn refused(shard: &ShardConfig, error: &SchemaBaselineError) -> ErrorDetail {
    match error {
        SchemaBaselineError::Exec(error) => exec_failure(error),
        SchemaBaselineError::NotAtVersion(message) => failure(
            ErrorKind::BadInput,
            format!("shard {}: {message}", shard.id),
        ),
        SchemaBaselineError::Tool { .. } => {
            failure(ErrorKind::Failed, format!("shard {}: {error}", shard.id))
        }
    }
}

fn postgres_only(shard: &ShardConfig) -> Result<(), ErrorDetail> {
    if shard.database_url.expose().starts_with("postgres") {
        Ok(())
    } else {
        Err(failure(
            ErrorKind::BadInput,
            format!(
                "shard {}: schema baselines need PostgreSQL (pg_dump)",
                shard.id
            ),
        ))
    }
}

/// The shard's baseline at the order's version.
pub async fn take(
    config: &AgentConfig,
    shard: &ShardConfig,
    order: &TakeSchemaBaseline,
) -> Result<SchemaBaseline, ErrorDetail> {
    postgres_only(shard)?;
    let shipped = order.migration_set.as_ref().ok_or_else(|| {
        failure(
            ErrorKind::BadInput,
            "the request carries no migration set".to_owned(),
        )
    })?;
    let set = unpack(shipped).map_err(|error| failure(error.kind(), error.to_string()))?;
    let baseline = schema_baseline::take(
        &shard.database_url,
        &set,
        &order.version,
        &config.rehearsals.pg_dump,
    )
    .await
    .map_err(|error| refused(shard, &error))?;
    tracing::info!(shard = %shard.id, version = %baseline.version, fingerprint = %baseline.fingerprint, "schema baseline taken");
    Ok(SchemaBaseline {
        source_shard: shard.id.clone(),
        ..baseline.to_wire()
    })
}

/// Verifies the order's baseline beside the shard.
pub async fn verify(
    config: &AgentConfig,
    shard: &ShardConfig,
    order: &VerifySchemaBaseline,
) -> Result<BaselineVerification, ErrorDetail> {
    postgres_only(shard)?;
    let (Some(shipped), Some(wire)) = (&order.migration_set, &order.baseline) else {
        return Err(failure(
            ErrorKind::BadInput,
            "the request carries no migration set or no baseline".to_owned(),
        ));
    };
    let baseline = schema_baseline::SchemaBaseline::from_wire(wire)
        .map_err(|message| failure(ErrorKind::BadInput, message))?;
    let set = unpack(shipped).map_err(|error| failure(error.kind(), error.to_string()))?;
    let server = config
        .rehearsals
        .staging
        .as_ref()
        .unwrap_or(&shard.database_url);
    let verification = schema_baseline::verify(server, &set, &baseline)
        .await
        .map_err(|error| refused(shard, &error))?;
    tracing::info!(shard = %shard.id, baseline = %wire.baseline_id, holds = verification.holds(), "schema baseline verified");
    Ok(BaselineVerification {
        holds: verification.holds(),
        replayed: verification.replayed.to_string(),
        seeded: verification.seeded.to_string(),
        on_shard: shard.id.clone(),
        verified_by: String::new(),
        at: Some(std::time::SystemTime::now().into()),
    })
}
