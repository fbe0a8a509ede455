//! `idm.v1.KeyService`.

use std::sync::Arc;

use idm_proto::v1::key_service_server::KeyService;
use idm_proto::v1::{GetKeyRequest, Key, RotateKeyRequest, RotateKeyResponse, Scope};
use tonic::{Request, Response, Status};

use super::auth::caller;
use super::trail;
use crate::keys::{KeyManager, Rotation};
use crate::secrets::KeySource;

pub struct KeyApi {
    pub keys: Arc<KeyManager>,
}

fn source_name(source: &KeySource) -> String {
    match source {
        KeySource::Env => crate::secrets::KEY_ENV.to_string(),
        KeySource::File(path) => format!("file:{}", path.display()),
    }
}

fn to_proto(rotation: Rotation) -> RotateKeyResponse {
    RotateKeyResponse {
        fingerprint: rotation.fingerprint,
        previous_fingerprint: rotation.previous_fingerprint,
        credentials_resealed: saturating_i64(rotation.credentials),
        config_values_resealed: saturating_i64(rotation.config_values),
        unreadable: saturating_i64(rotation.unreadable),
        key_file: rotation.key_file.display().to_string(),
    }
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[tonic::async_trait]
impl KeyService for KeyApi {
    async fn get_key(&self, request: Request<GetKeyRequest>) -> Result<Response<Key>, Status> {
        caller(&request)?.require(Scope::Admin)?;
        let status = self.keys.status().await?;
        Ok(Response::new(Key {
            fingerprint: status.fingerprint,
            source: source_name(&status.source),
            rotating_to: status.rotating_to.unwrap_or_default(),
        }))
    }

    async fn rotate_key(
        &self,
        request: Request<RotateKeyRequest>,
    ) -> Result<Response<RotateKeyResponse>, Status> {
        trail::target(&request, "keys/encryption");
        let caller = caller(&request)?;
        caller.require(Scope::Admin)?;
        let outcome = self.keys.rotate().await;
        // The audit layer records actor and outcome; the entry names the new
        // fingerprint (never key material).
        match &outcome {
            Ok(done) => {
                trail::detail(&request, &format!("fingerprint {}", done.fingerprint));
                tracing::info!(
                actor = %caller.actor(),
                fingerprint = %done.fingerprint,
                "key rotated"
                )
            }
            Err(e) => {
                tracing::warn!(actor = %caller.actor(), error = %e, "key rotation refused or failed")
            }
        }
        Ok(Response::new(to_proto(outcome?)))
    }
}
