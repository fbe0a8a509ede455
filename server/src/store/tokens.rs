//! API tokens and login sessions. Only a SHA-256 of each secret is stored.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Store, StoreError};

/// What a bearer record is: an API token (`idmctl tokens create`) or a
/// session from `AuthService.Login`. Records written before schema version 4
/// have no kind and are API tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    #[default]
    Token,
    Session,
}

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
    #[serde(default, deserialize_with = "kind_or_token")]
    pub kind: TokenKind,
    /// A session's account name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// A session's idle timeout, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<i64>,
    /// A session's last use as last written (the node keeps fresher times in memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<String>,
}

/// NONE (a record from before sessions) reads as an API token.
fn kind_or_token<'de, D: serde::Deserializer<'de>>(d: D) -> Result<TokenKind, D::Error> {
    Ok(Option::<TokenKind>::deserialize(d)?.unwrap_or_default())
}

const COLUMNS: &str = "tid, scope, description, hash, created, expires, revoked, kind, account, idle_timeout, last_used";

impl Store {
    pub async fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        self.execute(
            "CREATE type::record('token', $record.tid) CONTENT $record RETURN NONE",
            json!({ "record": token }),
        )
        .await
    }

    /// API tokens and sessions, oldest first.
    pub async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.query_all(
            &format!("SELECT {COLUMNS} FROM token ORDER BY created"),
            json!({}),
        )
        .await
    }

    /// Marks a token revoked; `None` if there is no such token.
    pub async fn revoke_token(&self, tid: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.query_one(
            &format!("UPDATE type::record('token', $tid) SET revoked = true RETURN {COLUMNS}"),
            json!({ "tid": tid }),
        )
        .await
    }

    /// Revokes every live session of `account`; returns them.
    pub async fn revoke_sessions(&self, account: &str) -> Result<Vec<TokenRecord>, StoreError> {
        self.query_all(
            &format!(
                "UPDATE token SET revoked = true \
                 WHERE account = $account AND kind = 'session' AND revoked = false \
                 RETURN {COLUMNS}"
            ),
            json!({ "account": account }),
        )
        .await
    }

    /// Moves a session's written last use forward to `at` (never back).
    pub async fn touch_session(&self, tid: &str, at: &str) -> Result<(), StoreError> {
        self.execute(
            "UPDATE type::record('token', $tid) SET last_used = $at \
             WHERE kind = 'session' AND (last_used = NONE OR last_used < $at) RETURN NONE",
            json!({ "tid": tid, "at": at }),
        )
        .await
    }

    /// Deletes sessions that were revoked or are past their absolute expiry.
    pub async fn purge_sessions(&self, now: &str) -> Result<(), StoreError> {
        self.execute(
            "DELETE token WHERE kind = 'session' AND (revoked = true OR expires <= $now) \
             RETURN NONE",
            json!({ "now": now }),
        )
        .await
    }
}
