//! The wire contract's messages in the proto3 JSON mapping (field names as in the `.proto`
//! files, enum values by name, 64-bit integers and timestamps as strings), read from the
//! contract's own descriptors: what the web console serves, the same as gRPC answers.

use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

use super::DESCRIPTOR_SET;

/// Why a message could not be put in JSON: both mean the contract and its code disagree.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("the wire contract's descriptors are unreadable: {0}")]
    Descriptors(String),
    #[error("{0} is not a message of the wire contract")]
    UnknownMessage(&'static str),
    #[error("{name} does not decode as itself: {reason}")]
    Decode { name: &'static str, reason: String },
    #[error("{name} does not serialize: {reason}")]
    Serialize { name: &'static str, reason: String },
}

/// A message of the contract, by its full name (`fleetshift.v1.Plan`).
pub trait Named: prost::Message {
    const FULL_NAME: &'static str;
}

macro_rules! named {
    ($($message:ident),* $(,)?) => {
        $(impl Named for super::v1::$message {
            const FULL_NAME: &'static str = concat!("fleetshift.v1.", stringify!($message));
        })*
    };
}

named!(
    Plan,
    ShardTask,
    ListPlansResponse,
    ListShardsResponse,
    ShardSummary,
    RolloutEvent,
    ListBackupsResponse,
    ShardLedger,
);

fn pool() -> Result<&'static DescriptorPool, JsonError> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(DESCRIPTOR_SET).map_err(|error| error.to_string()))
        .as_ref()
        .map_err(|reason| JsonError::Descriptors(reason.clone()))
}

/// `message` in the proto3 JSON mapping, fields named as in the contract.
pub fn to_json<M: Named>(message: &M) -> Result<serde_json::Value, JsonError> {
    let descriptor = pool()?
        .get_message_by_name(M::FULL_NAME)
        .ok_or(JsonError::UnknownMessage(M::FULL_NAME))?;
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice()).map_err(
        |error| JsonError::Decode {
            name: M::FULL_NAME,
            reason: error.to_string(),
        },
    )?;
    let options = SerializeOptions::new().use_proto_field_name(true);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|error| JsonError::Serialize {
            name: M::FULL_NAME,
            reason: error.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::{Plan, PlanState, ShardState, ShardTask, Wave};

    #[test]
    fn a_plan_reads_as_the_contract_names_it() {
        let plan = Plan {
            plan_id: "p-1".to_owned(),
            state: PlanState::Running.into(),
            created_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            waves: vec![Wave {
                index: 1,
                shards: vec![ShardTask {
                    shard_id: "users-0001".to_owned(),
                    state: ShardState::Failed.into(),
                    fence_token: 7,
                    ..ShardTask::default()
                }],
            }],
            ..Plan::default()
        };
        let json = to_json(&plan).expect("json");
        assert_eq!(json["plan_id"], "p-1");
        assert_eq!(json["state"], "PLAN_STATE_RUNNING");
        assert_eq!(json["created_at"], "2023-11-14T22:13:20Z");
        let task = &json["waves"][0]["shards"][0];
        assert_eq!(task["state"], "SHARD_STATE_FAILED");
        assert_eq!(task["fence_token"], "7", "64-bit integers are strings");
    }
}
