//! End-to-end tests: one binary, a module per capability. Each test starts its
//! own idmd (real process, real gRPC over loopback, real embedded SurrealDB).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod accounts;
mod admin_audit;
mod audit;
mod auth;
mod backup;
mod cli;
mod cluster;
mod conf;
mod conf_secrets;
mod console;
mod cookbook;
mod durability;
mod extremes;
mod filter_limits;
mod filters;
mod gateway_tls;
mod health;
mod keys;
mod ldap;
mod links;
mod metrics;
mod objects;
mod paging;
mod passwords;
mod policies;
mod recon;
mod request_id;
mod rest;
mod rest_ops;
mod retention;
mod scheduler;
mod scim;
mod scim_location;
mod scim_patch;
mod secrets;
mod system_objects;
mod tls;
mod wren_conf;

use idm_proto::v1::{
    CreateObjectRequest, ManagedObject, ReconRun, StartReconRequest, WatchReconRequest,
};
use idm_tests::{Clients, attrs};
use serde_json::Value;
use tonic::Code;
use tonic_types::StatusExt;

/// The secret of a new token with `scope`, made by the bootstrap admin.
pub async fn token(idmd: &idm_tests::Idmd, scope: idm_proto::v1::Scope) -> String {
    let mut c = idmd.clients().await;
    c.tokens
        .create_token(idm_proto::v1::CreateTokenRequest {
            scope: scope.into(),
            description: format!("{scope:?} test"),
            ttl: None,
        })
        .await
        .unwrap()
        .into_inner()
        .secret
}

/// Creates `managed/user/<id>` with the given attributes.
pub async fn create_user(clients: &mut Clients, id: &str, attributes: Value) -> ManagedObject {
    clients
        .objects
        .create_object(CreateObjectRequest {
            parent: "managed/user".into(),
            object_id: id.into(),
            attributes: attrs(attributes),
        })
        .await
        .unwrap_or_else(|e| panic!("create {id}: {e}"))
        .into_inner()
}

/// `managed/<type>/<id>` as JSON with its `_rev`, or `None` if it does not exist.
pub async fn managed_object(clients: &mut Clients, type_name: &str, id: &str) -> Option<Value> {
    match clients
        .objects
        .get_object(idm_proto::v1::GetObjectRequest {
            name: format!("managed/{type_name}/{id}"),
            read_mask: None,
        })
        .await
    {
        Ok(object) => {
            let object = object.into_inner();
            let mut json = idm_tests::json_of(&object);
            json["_rev"] = serde_json::json!(object.revision.to_string());
            Some(json)
        }
        Err(status) if status.code() == Code::NotFound => None,
        Err(status) => panic!("get managed/{type_name}/{id}: {status}"),
    }
}

/// Whether idmd accepts `password` for `managed/user/<id>` (checked against its hash).
pub async fn password_valid(clients: &mut Clients, id: &str, password: &str) -> bool {
    clients
        .objects
        .verify_password(idm_proto::v1::VerifyPasswordRequest {
            name: format!("managed/user/{id}"),
            property: String::new(),
            password: password.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .valid
}

/// Runs a reconciliation of `mapping` to its end.
pub async fn recon(clients: &mut Clients, mapping: &str) -> ReconRun {
    clients
        .recon
        .start_recon(StartReconRequest {
            mapping: mapping.into(),
            wait: true,
        })
        .await
        .unwrap()
        .into_inner()
}

/// Follows the run named `name` (`recon/<id>`): its snapshots until it ends.
pub async fn watch(
    clients: &mut Clients,
    name: &str,
) -> Result<tonic::Streaming<ReconRun>, tonic::Status> {
    let request = WatchReconRequest { name: name.into() };
    Ok(clients.recon.watch_recon(request).await?.into_inner())
}

/// Asserts the call failed with `code`, and returns the status.
pub fn expect_code<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: Code,
) -> tonic::Status {
    match result {
        Ok(value) => panic!("expected {code:?}, got {value:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "{status:?}");
            status
        }
    }
}

/// The field named by the status's BadRequest violation.
pub fn violated_field(status: &tonic::Status) -> String {
    let details = status.get_error_details();
    let violations = details
        .bad_request()
        .map(|b| b.field_violations.clone())
        .unwrap_or_default();
    violations
        .first()
        .map(|v| v.field.clone())
        .unwrap_or_else(|| panic!("no field violation in {status:?}"))
}
