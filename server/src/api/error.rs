//! Domain errors become gRPC statuses here, and only here.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::accounts::AccountError;
use crate::keys::KeyError;
use crate::managed::{Failures, ManagedError};
use crate::store::StoreError;

const DOMAIN: &str = "idm.v1";

impl From<ManagedError> for Status {
    fn from(error: ManagedError) -> Self {
        let message = error.to_string();
        match error {
            ManagedError::UnknownType(_) | ManagedError::NotFound(_) => Status::not_found(message),
            ManagedError::Invalid {
                property,
                message: description,
            } => Status::with_error_details(
                Code::InvalidArgument,
                message,
                ErrorDetails::with_bad_request_violation(property, description),
            ),
            ManagedError::Policy(failures) => policy_status(&failures, message),
            ManagedError::Hook { .. } => Status::failed_precondition(message),
            ManagedError::Filter { position, .. } => Status::with_error_details(
                Code::InvalidArgument,
                message,
                ErrorDetails::with_error_info(
                    "FILTER_SYNTAX",
                    DOMAIN,
                    HashMap::from([("position".to_string(), position.to_string())]),
                ),
            ),
            ManagedError::RevisionMismatch { .. } => Status::failed_precondition(message),
            ManagedError::AlreadyExists(_) => Status::already_exists(message),
            ManagedError::NotUnique { property } => Status::with_error_details(
                Code::AlreadyExists,
                message,
                ErrorDetails::with_bad_request_violation(property, "must be unique"),
            ),
            ManagedError::Throttled { retry_after } => Status::with_error_details(
                Code::ResourceExhausted,
                message,
                ErrorDetails::with_retry_info(Some(retry_after)),
            ),
            ManagedError::Store(e) => e.into(),
            ManagedError::Secret(e) => {
                tracing::error!(error = %e, "secret handling failed");
                Status::internal("secret handling failed; see the server log")
            }
        }
    }
}

/// Wren's policy failure: INVALID_ARGUMENT with a `BadRequest` (one
/// violation per property, naming the policies) and an `ErrorInfo`
/// `POLICY_VALIDATION_FAILED` whose `failedPolicyRequirements` is Wren's array
/// as compact JSON.
pub fn policy_status(failures: &Failures, message: String) -> Status {
    let violations = failures
        .0
        .iter()
        .map(|f| FieldViolation::new(&f.property, f.describe()))
        .collect::<Vec<_>>();
    let mut details = ErrorDetails::with_bad_request(violations);
    details.set_error_info(
        "POLICY_VALIDATION_FAILED",
        DOMAIN,
        HashMap::from([(
            "failedPolicyRequirements".to_string(),
            failures.to_json().to_string(),
        )]),
    );
    Status::with_error_details(Code::InvalidArgument, message, details)
}

impl From<StoreError> for Status {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Contention => Status::aborted(error.to_string()),
            StoreError::AlreadyExists(_) | StoreError::NotUnique { .. } => {
                Status::already_exists(error.to_string())
            }
            StoreError::MissingReference(_) => Status::invalid_argument(error.to_string()),
            other => {
                tracing::error!(error = %other, "store failure");
                Status::internal("store failure; see the server log")
            }
        }
    }
}

impl From<KeyError> for Status {
    fn from(error: KeyError) -> Self {
        let message = error.to_string();
        match error {
            KeyError::FromEnv | KeyError::Interrupted { .. } | KeyError::Mismatch { .. } => {
                Status::failed_precondition(message)
            }
            KeyError::Busy | KeyError::Incomplete { .. } => Status::aborted(message),
            KeyError::Store(e) => e.into(),
            // File and sealing failures: the log has the detail (paths, never keys).
            other => {
                tracing::error!(error = %other, "key rotation failed");
                Status::internal("key rotation failed; see the server log")
            }
        }
    }
}

impl From<AccountError> for Status {
    fn from(error: AccountError) -> Self {
        let message = error.to_string();
        match error {
            AccountError::Invalid(violation) => Status::with_error_details(
                Code::InvalidArgument,
                message,
                ErrorDetails::with_bad_request_violation(violation.field, violation.message),
            ),
            AccountError::NotFound(_) => Status::not_found(message),
            AccountError::AlreadyExists(_) => Status::already_exists(message),
            AccountError::LastAdmin(_) => Status::failed_precondition(message),
            AccountError::LoginRefused { .. } => Status::unauthenticated(message),
            AccountError::Throttled { retry_after } => Status::with_error_details(
                Code::ResourceExhausted,
                message,
                ErrorDetails::with_retry_info(Some(retry_after)),
            ),
            AccountError::Store(e) => e.into(),
            AccountError::Secret(e) => {
                tracing::error!(error = %e, "password hashing failed");
                Status::internal("password hashing failed; see the server log")
            }
        }
    }
}
