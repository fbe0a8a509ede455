//! API tokens and login sessions. Only a SHA-256 of each secret is stored.
//!
//! Every change another node must hear of (a token or session created, a
//! revocation, a session ended) stamps the records it touches with the next
//! number of one store-wide counter (`meta:token_seq`), in the same
//! transaction; as every such transaction writes the counter, they commit in
//! the counter's order, so a node that has read every change up to `n`
//! misses none when it next reads `changed > n` (one range of the
//! `token_changed` index). A session's last use is not such a change: it is
//! written often, and a node reads it by record id when it needs it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::objects::take_json;
use super::{AccountSecret, Store, StoreError, bind_all, decode_optional, decode_rows};

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
    /// The change number of the last create or revocation (`None` before
    /// schema version 6 and for records not yet written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<i64>,
}

/// NONE (a record from before sessions) reads as an API token.
fn kind_or_token<'de, D: serde::Deserializer<'de>>(d: D) -> Result<TokenKind, D::Error> {
    Ok(Option::<TokenKind>::deserialize(d)?.unwrap_or_default())
}

const COLUMNS: &str = "tid, scope, description, hash, created, expires, revoked, kind, account, idle_timeout, last_used, changed";

/// Runs `statements` in one transaction (one round trip, so that two
/// nodes' changes overlap as little as possible) after `LET $n = <the next
/// change number>`; returns what the last of them answered. Retried on write
/// conflicts (two nodes taking a number at once).
async fn changing(store: &Store, statements: &str, params: Value) -> Result<Value, StoreError> {
    let sql = format!(
        "BEGIN; \
         LET $n = (UPSERT meta:token_seq SET n = (n ?? 0) + 1 RETURN VALUE n)[0]; \
         {statements}; \
         COMMIT;"
    );
    let _timer = crate::metrics::store_timer(crate::metrics::StoreOp::Transaction);
    // Every token change writes the counter, so two at once conflict: more
    // attempts than other writes, with short full-jitter waits, so that a
    // node taking numbers in a tight loop cannot starve another.
    let mut cap = Duration::from_millis(1);
    for _ in 1..CHANGE_ATTEMPTS {
        match change_once(store, &sql, &params).await {
            Err(e) if super::is_retryable(&e) => {
                let wait = rand::random_range(0..=cap.as_micros() as u64);
                tokio::time::sleep(Duration::from_micros(wait)).await;
                cap = (cap * 2).min(Duration::from_millis(20));
            }
            other => return other,
        }
    }
    match change_once(store, &sql, &params).await {
        Err(e) if super::is_retryable(&e) => Err(StoreError::Contention),
        other => other,
    }
}

/// The most attempts at one token change.
const CHANGE_ATTEMPTS: u32 = 32;

async fn change_once(store: &Store, sql: &str, params: &Value) -> Result<Value, StoreError> {
    let mut response = bind_all(store.db.shared().query(sql), params.clone()).await?;
    let mut errors: Vec<(usize, String)> = response
        .take_errors()
        .into_iter()
        .map(|(at, e)| (at, e.to_string()))
        .collect();
    errors.sort();
    // The statements after a failure all answer "not executed due to a
    // failed transaction"; the cause (a conflict, say) is another one.
    if let Some((_, cause)) = errors
        .iter()
        .find(|(_, e)| !e.contains("not executed due to a failed transaction"))
        .or(errors.first())
    {
        return Err(StoreError::Query(cause.clone()));
    }
    // The answers: BEGIN's, LET's, the statements', COMMIT's.
    let last = response
        .num_statements()
        .checked_sub(2)
        .ok_or_else(|| StoreError::Decode("a token change answered nothing".into()))?;
    take_json(&mut response, last)
}

impl Store {
    /// Writes a new token or session; returns it with its change number.
    pub async fn insert_token(&self, token: &TokenRecord) -> Result<TokenRecord, StoreError> {
        let answer = changing(
            self,
            &format!(
                "CREATE type::record('token', $record.tid) CONTENT $record RETURN NONE; \
                 UPDATE type::record('token', $record.tid) SET changed = $n RETURN {COLUMNS}"
            ),
            json!({ "record": token }),
        )
        .await?;
        decode_optional(answer)?
            .ok_or_else(|| StoreError::Decode("a new token was not written".into()))
    }

    /// Writes a new session unless its account changed since the login read
    /// it as `seen` (disabled, deleted, another role or password): `None`
    /// then. As this and [`Store::revoke_sessions`] both take a change
    /// number, one of them commits first: a session made while the account
    /// is disabled is either refused here or revoked there.
    pub async fn insert_session(
        &self,
        session: &TokenRecord,
        seen: &AccountSecret,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let answer = changing(
            self,
            &format!(
                "LET $same = (SELECT VALUE enabled = true AND role = $role AND hash = $hash \
                   FROM ONLY type::record('account', $record.account)) = true; \
                 IF $same {{ CREATE type::record('token', $record.tid) CONTENT $record \
                   RETURN NONE; }}; \
                 UPDATE type::record('token', $record.tid) SET changed = $n WHERE $same \
                   RETURN {COLUMNS}"
            ),
            json!({ "record": session, "role": seen.role, "hash": seen.hash }),
        )
        .await?;
        decode_optional(answer)
    }

    /// One token or session by id (a point read), `None` if there is none.
    pub async fn get_token(&self, tid: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.query_one(
            &format!("SELECT {COLUMNS} FROM type::record('token', $tid)"),
            json!({ "tid": tid }),
        )
        .await
    }

    /// Tokens and sessions changed after change number `since`, in change
    /// order, at most `limit` (one range of the `token_changed` index).
    pub async fn changed_tokens(
        &self,
        since: i64,
        limit: usize,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        self.query_all(
            &format!(
                "SELECT {COLUMNS} FROM token WHERE changed > $since ORDER BY changed LIMIT $limit"
            ),
            json!({ "since": since, "limit": limit }),
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
        let answer = changing(
            self,
            &format!(
                "UPDATE type::record('token', $tid) SET revoked = true, changed = $n \
                 RETURN {COLUMNS}"
            ),
            json!({ "tid": tid }),
        )
        .await?;
        decode_optional(answer)
    }

    /// Revokes every live session of `account`; returns them.
    pub async fn revoke_sessions(&self, account: &str) -> Result<Vec<TokenRecord>, StoreError> {
        let answer = changing(
            self,
            &format!(
                "UPDATE token SET revoked = true, changed = $n \
                 WHERE account = $account AND kind = 'session' AND revoked = false \
                 RETURN {COLUMNS}"
            ),
            json!({ "account": account }),
        )
        .await?;
        decode_rows(answer)
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

    /// Removes the token table, so that reading its changes fails.
    #[cfg(test)]
    pub(crate) async fn break_tokens_for_tests(&self) -> Result<(), StoreError> {
        self.execute("REMOVE TABLE token", json!({})).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The plan SurrealDB makes for `sql`, as text.
    async fn plan(store: &Store, sql: &str, params: serde_json::Value) -> String {
        let mut response =
            super::super::bind_all(store.db.shared().query(format!("{sql} EXPLAIN")), params)
                .await
                .unwrap();
        let value: surrealdb::types::Value = response.take(0).unwrap();
        value.into_json_value().to_string()
    }

    #[tokio::test]
    async fn the_poll_reads_one_index_range() {
        let store = Store::open("mem://").await.unwrap();
        let shown = plan(
            &store,
            &format!(
                "SELECT {COLUMNS} FROM token WHERE changed > $since ORDER BY changed LIMIT $limit"
            ),
            json!({ "since": 3, "limit": 10 }),
        )
        .await;
        assert!(shown.contains("\"IndexScan\""), "{shown}");
        assert!(shown.contains("\"index\":\"token_changed\""), "{shown}");
        assert!(!shown.contains("TableScan"), "{shown}");
    }
}
