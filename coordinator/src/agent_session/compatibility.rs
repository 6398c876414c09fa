//! Whether an agent and this coordinator can work together, by the versions each names.

use fleetshift_common::proto::v1::Hello;
use fleetshift_common::versions::{self, Side};
use tonic::Status;

use crate::error::{ErrorCode, refuse};

/// Refuses an agent this coordinator cannot work with, or one that cannot work with this
/// coordinator, naming both versions and what to upgrade first.
pub(super) fn check(hello: &Hello) -> Result<(), Status> {
    let too_old_agent = versions::refusal(
        Side::Agent,
        &hello.agent_version,
        versions::VERSION,
        versions::OLDEST_AGENT,
    );
    let too_old_coordinator = versions::refusal(
        Side::Coordinator,
        versions::VERSION,
        &hello.agent_version,
        &hello.oldest_coordinator,
    );
    match too_old_agent.or(too_old_coordinator) {
        Some(refused) => Err(refuse(ErrorCode::NotNow, refused)),
        None => Ok(()),
    }
}
