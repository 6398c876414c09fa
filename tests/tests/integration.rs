//! Integration tests against real PostgreSQL clusters, real SQLite files and the real
//! `fleetshift` binary. One test crate, so the dependency tree is linked once.

mod integration {
    pub mod support;

    mod adoption;
    mod agent;
    mod alembic;
    mod assignments;
    mod atomicity;
    mod backups;
    mod baselines;
    mod catalog;
    mod cli_fleet;
    mod config_env;
    mod conformance;
    mod crates_io;
    mod database_tls;
    mod deploy_dashboard;
    mod deploy_images;
    mod deploy_manifests;
    mod deploy_units;
    mod duties;
    mod election;
    mod fenced_batches;
    mod fleet_api;
    mod fleet_caps;
    mod fleet_faults;
    mod fleet_throttle;
    mod grpc_conventions;
    mod handshakes;
    mod lifecycle;
    mod lint;
    mod live_display;
    mod local_fleet;
    mod locks;
    mod notice;
    mod operator;
    mod packaging;
    mod paused;
    mod plan_sql;
    mod processes;
    mod real_histories;
    mod rehearsal;
    mod replicas;
    mod retry;
    mod risk;
    mod rollback;
    mod rolling_upgrade;
    mod rollout;
    mod runbook;
    mod running_statements;
    mod schema;
    mod schema_baselines;
    mod schema_drift;
    mod secrets;
    mod session;
    mod store;
    mod targets;
    mod telemetry;
    mod tls;
    mod traces;
    mod validated_rollout;
    mod validation;
    mod versions;
    mod webhooks;
    mod windows;
}
