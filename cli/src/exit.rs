//! Exit codes scripts can trust, mapped from error kinds in exactly one place.

use std::process::ExitCode;

use fleetshift_common::error::ErrorKind;
use fleetshift_common::proto::v1::ErrorKind as WireErrorKind;
use fleetshift_coordinator::error::ErrorCode;

pub const OK: u8 = 0;
/// A statement failed (the revision was rolled back, or left `started` when it cannot be).
pub const FAILED: u8 = 1;
/// Migration files or arguments are wrong; nothing ran.
pub const BAD_INPUT: u8 = 2;
/// Applied revisions changed since they were applied.
pub const DRIFT: u8 = 3;
/// A newer fencing token owns the shard; nothing changed.
pub const FENCED_OUT: u8 = 4;
/// Locks could not be had within the bounded retries.
pub const LOCK_TIMEOUT: u8 = 5;
/// The database could not be reached.
pub const UNREACHABLE: u8 = 6;
/// The shard's state needs an operator's decision.
pub const NEEDS_OPERATOR: u8 = 7;
/// Stopped on request (Ctrl-C) between revisions; everything done is complete and recorded.
pub const STOPPED: u8 = 8;
/// The coordinator refused the caller's identity or role.
pub const NOT_AUTHORIZED: u8 = 9;
/// The plan's state does not allow this now (e.g. starting an unapproved plan), or the caller
/// went past the coordinator's limits per identity; retry later.
pub const NOT_NOW: u8 = 10;
/// `lint` found open findings at or above `--fail-on`.
pub const FINDINGS: u8 = 11;

pub fn code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::BadInput => BAD_INPUT,
        ErrorKind::Drift => DRIFT,
        ErrorKind::FencedOut => FENCED_OUT,
        ErrorKind::LockTimeout => LOCK_TIMEOUT,
        ErrorKind::Unreachable => UNREACHABLE,
        ErrorKind::NeedsOperator => NEEDS_OPERATOR,
        ErrorKind::Failed => FAILED,
        ErrorKind::Stopped => STOPPED,
        ErrorKind::OutsideWindow => NOT_NOW,
    }
}

/// A coordinator's refusal, by its error code (read back from the gRPC status code).
pub fn from_status(code: tonic::Code) -> u8 {
    match ErrorCode::of_grpc(code) {
        ErrorCode::Unauthenticated | ErrorCode::Forbidden => NOT_AUTHORIZED,
        ErrorCode::Unavailable | ErrorCode::TimedOut => UNREACHABLE,
        ErrorCode::BadRequest
        | ErrorCode::NotFound
        | ErrorCode::Unsupported
        | ErrorCode::Expired => BAD_INPUT,
        ErrorCode::NotNow | ErrorCode::Contended | ErrorCode::Overloaded => NOT_NOW,
        ErrorCode::Gone | ErrorCode::Internal => FAILED,
    }
}

/// An agent's failure, by the kind it reported on the wire.
pub fn from_wire(kind: WireErrorKind) -> u8 {
    match kind {
        WireErrorKind::BadInput => BAD_INPUT,
        WireErrorKind::Drift => DRIFT,
        WireErrorKind::FencedOut => FENCED_OUT,
        WireErrorKind::LockTimeout => LOCK_TIMEOUT,
        WireErrorKind::Unreachable => UNREACHABLE,
        WireErrorKind::NeedsOperator => NEEDS_OPERATOR,
        WireErrorKind::Stopped | WireErrorKind::Interrupted => STOPPED,
        WireErrorKind::Precondition | WireErrorKind::OutsideWindow => NOT_NOW,
        WireErrorKind::Failed | WireErrorKind::Unspecified => FAILED,
    }
}

pub fn from_kind(kind: ErrorKind) -> ExitCode {
    ExitCode::from(code(kind))
}

/// The table printed by `--help`.
pub const HELP: &str = "Exit codes: 0 ok, 1 a statement failed, 2 bad input (files or arguments), 3 drift, \
4 fenced out, 5 lock timeout exhausted / another migrator, 6 database unreachable, 7 shard needs an operator, \
8 stopped by Ctrl-C between revisions (or a rollout cancelled), 9 not authorized by the coordinator, \
10 not now (the plan's state, or past the coordinator's limits: retry later), 11 lint findings at or above --fail-on.";
