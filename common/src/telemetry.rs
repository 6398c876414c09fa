//! What operators watch a fleetshift process by: structured logs ([`logging`]), OpenTelemetry
//! traces ([`traces`]), and one HTTP endpoint ([`endpoint`]) with Prometheus metrics and the
//! liveness and readiness probes.

pub mod endpoint;
pub mod logging;
pub mod traces;
