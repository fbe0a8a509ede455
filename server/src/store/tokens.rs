//! API tokens. Only a SHA-256 of each secret is stored.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub tid: String,
    pub scope: String,
    pub description: String,
    /// Hex SHA-256 of the secret.
    pub hash: String,
    pub created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    pub revoked: bool,
}

impl Store {
    pub async fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        self.execute(
            "CREATE type::record('token', $record.tid) CONTENT $record RETURN NONE",
            json!({ "record": token }),
        )
        .await
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.query_all(
            "SELECT tid, scope, description, hash, created, expires, revoked FROM token ORDER BY created",
            json!({}),
        )
        .await
    }

    /// Marks a token revoked; `None` if there is no such token.
    pub async fn revoke_token(&self, tid: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.query_one(
            "UPDATE type::record('token', $tid) SET revoked = true \
             RETURN tid, scope, description, hash, created, expires, revoked",
            json!({ "tid": tid }),
        )
        .await
    }
}
