//! The coordinator's error codes: every error a service returns is classified into this small
//! set, and the set is mapped to gRPC in exactly one place ([`ErrorCode::grpc`]); clients map a
//! gRPC code back with [`ErrorCode::of_grpc`] (the CLI's exit codes start from there). Errors
//! of the coordinator's own types say their code through [`ServiceError`]; a service that
//! refuses a request itself says it with [`refuse`].

use std::fmt::Display;

use tonic::Status;

use crate::rollout::RolloutError;
use crate::store::StoreError;

/// What went wrong, as a caller can act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request is wrong; sending it again changes nothing.
    BadRequest,
    /// What the request names does not exist.
    NotFound,
    /// The caller presented no usable identity.
    Unauthenticated,
    /// The caller's identity may not do this.
    Forbidden,
    /// The state of things does not allow this now (a plan's state, a held shard, a lapsed
    /// lease); it may later.
    NotNow,
    /// Others changed the same thing meanwhile; retry.
    Contended,
    /// The fleet store (or an agent) cannot be reached; retry.
    Unavailable,
    /// The caller went past its limits on this replica (requests per second, calls open at
    /// once); retry later.
    Overloaded,
    /// No answer within the time allowed.
    TimedOut,
    /// The other side went away.
    Gone,
    /// This coordinator does not do that.
    Unsupported,
    /// What was asked for is no longer kept (history the store compacted).
    Expired,
    /// The coordinator's own fault.
    Internal,
}

impl ErrorCode {
    /// The gRPC status code of this error code: the one mapping.
    pub fn grpc(self) -> tonic::Code {
        match self {
            Self::BadRequest => tonic::Code::InvalidArgument,
            Self::NotFound => tonic::Code::NotFound,
            Self::Unauthenticated => tonic::Code::Unauthenticated,
            Self::Forbidden => tonic::Code::PermissionDenied,
            Self::NotNow => tonic::Code::FailedPrecondition,
            Self::Contended => tonic::Code::Aborted,
            Self::Unavailable => tonic::Code::Unavailable,
            Self::Overloaded => tonic::Code::ResourceExhausted,
            Self::TimedOut => tonic::Code::DeadlineExceeded,
            Self::Gone => tonic::Code::Cancelled,
            Self::Unsupported => tonic::Code::Unimplemented,
            Self::Expired => tonic::Code::OutOfRange,
            Self::Internal => tonic::Code::Internal,
        }
    }

    /// The error code a gRPC status code stands for (a client's side of [`ErrorCode::grpc`]);
    /// codes the coordinator never sends count as internal.
    pub fn of_grpc(code: tonic::Code) -> Self {
        match code {
            tonic::Code::InvalidArgument => Self::BadRequest,
            tonic::Code::OutOfRange => Self::Expired,
            tonic::Code::NotFound => Self::NotFound,
            tonic::Code::Unauthenticated => Self::Unauthenticated,
            tonic::Code::PermissionDenied => Self::Forbidden,
            tonic::Code::FailedPrecondition => Self::NotNow,
            tonic::Code::Aborted | tonic::Code::AlreadyExists => Self::Contended,
            tonic::Code::Unavailable => Self::Unavailable,
            tonic::Code::ResourceExhausted => Self::Overloaded,
            tonic::Code::DeadlineExceeded => Self::TimedOut,
            tonic::Code::Cancelled => Self::Gone,
            tonic::Code::Unimplemented => Self::Unsupported,
            tonic::Code::Ok
            | tonic::Code::Unknown
            | tonic::Code::Internal
            | tonic::Code::DataLoss => Self::Internal,
        }
    }
}

/// An error that knows its code.
pub trait ServiceError: Display {
    fn code(&self) -> ErrorCode;
}

/// `error` as a gRPC status: its code, and its message for people.
pub fn status<E: ServiceError + ?Sized>(error: &E) -> Status {
    Status::new(error.code().grpc(), error.to_string())
}

/// A service's own refusal of a request.
pub fn refuse(code: ErrorCode, message: impl Into<String>) -> Status {
    Status::new(code.grpc(), message.into())
}

impl ServiceError for StoreError {
    /// An unreachable store is worth retrying; anything else is the coordinator's fault.
    fn code(&self) -> ErrorCode {
        match self {
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Compacted(_) => ErrorCode::Expired,
            Self::LeaseExpired(_)
            | Self::Claimed { .. }
            | Self::NotLeader(_)
            | Self::Corrupt { .. } => ErrorCode::Internal,
        }
    }
}

impl From<StoreError> for Status {
    fn from(error: StoreError) -> Self {
        match &error {
            StoreError::Unavailable(detail) => refuse(
                ErrorCode::Unavailable,
                format!("the fleet store is unavailable: {detail}"),
            ),
            _ => status(&error),
        }
    }
}

impl ServiceError for RolloutError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Store(error) => error.code(),
            Self::Corrupt { .. } => ErrorCode::Internal,
            Self::UnknownPlan(_) | Self::NotFound(_) => ErrorCode::NotFound,
            Self::BadRequest(_) => ErrorCode::BadRequest,
            Self::NotNow(_) => ErrorCode::NotNow,
            Self::Contended(_) => ErrorCode::Contended,
            Self::Forbidden(_) => ErrorCode::Forbidden,
        }
    }
}

impl From<RolloutError> for Status {
    fn from(error: RolloutError) -> Self {
        status(&error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ErrorCode; 13] = [
        ErrorCode::BadRequest,
        ErrorCode::NotFound,
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::NotNow,
        ErrorCode::Contended,
        ErrorCode::Unavailable,
        ErrorCode::Overloaded,
        ErrorCode::TimedOut,
        ErrorCode::Gone,
        ErrorCode::Unsupported,
        ErrorCode::Expired,
        ErrorCode::Internal,
    ];

    #[test]
    fn every_code_survives_the_trip_through_grpc() {
        for code in ALL {
            assert_eq!(ErrorCode::of_grpc(code.grpc()), code);
        }
    }

    #[test]
    fn an_unreachable_store_is_worth_a_retry_and_says_so() {
        let status = Status::from(StoreError::Unavailable("connection refused".to_owned()));
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.message().contains("fleet store is unavailable"));
        let contended = Status::from(RolloutError::Contended("p1".to_owned()));
        assert_eq!(contended.code(), tonic::Code::Aborted);
    }
}
