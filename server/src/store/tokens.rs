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

use serde::{Deserialize, Serialize};
use serde_json::json;

use std::future::Future;

use super::objects::{Tx, cancel, tx_query};
use super::{Store, StoreError, decode_optional, decode_rows, with_retry};

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

/// The next change number, taken inside `tx`.
async fn next_change(tx: &Tx) -> Result<i64, StoreError> {
    let n: Option<i64> = decode_optional(
        tx_query(
            tx,
            "UPSERT meta:token_seq SET n = (n ?? 0) + 1 RETURN VALUE n",
            json!({}),
        )
        .await?,
    )?;
    n.ok_or_else(|| StoreError::Decode("meta:token_seq has no number".into()))
}

/// Runs `work` with a fresh change number in one transaction (retried on
/// write conflicts: two nodes taking a number at once).
async fn changing<T, F, Fut>(store: &Store, work: F) -> Result<T, StoreError>
where
    F: Fn(Tx, i64) -> Fut,
    Fut: Future<Output = Result<(Tx, T), (Tx, StoreError)>>,
{
    with_retry(|| async {
        let tx = store.db.clone().begin().await?;
        let n = match next_change(&tx).await {
            Ok(n) => n,
            Err(e) => {
                cancel(tx).await;
                return Err(e);
            }
        };
        match work(tx, n).await {
            Ok((tx, done)) => {
                tx.commit().await?;
                Ok(done)
            }
            Err((tx, e)) => {
                cancel(tx).await;
                Err(e)
            }
        }
    })
    .await
}

impl Store {
    /// Writes a new token or session; returns it with its change number.
    pub async fn insert_token(&self, token: &TokenRecord) -> Result<TokenRecord, StoreError> {
        changing(self, |tx, n| async move {
            let mut record = token.clone();
            record.changed = Some(n);
            match tx_query(
                &tx,
                "CREATE type::record('token', $record.tid) CONTENT $record RETURN NONE",
                json!({ "record": record }),
            )
            .await
            {
                Ok(_) => Ok((tx, record)),
                Err(e) => Err((tx, e)),
            }
        })
        .await
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
        changing(self, |tx, n| async move {
            let answer = tx_query(
                &tx,
                &format!(
                    "UPDATE type::record('token', $tid) SET revoked = true, changed = $n \
                     RETURN {COLUMNS}"
                ),
                json!({ "tid": tid, "n": n }),
            )
            .await
            .and_then(decode_optional);
            match answer {
                Ok(record) => Ok((tx, record)),
                Err(e) => Err((tx, e)),
            }
        })
        .await
    }

    /// Revokes every live session of `account`; returns them.
    pub async fn revoke_sessions(&self, account: &str) -> Result<Vec<TokenRecord>, StoreError> {
        changing(self, |tx, n| async move {
            let answer = tx_query(
                &tx,
                &format!(
                    "UPDATE token SET revoked = true, changed = $n \
                     WHERE account = $account AND kind = 'session' AND revoked = false \
                     RETURN {COLUMNS}"
                ),
                json!({ "account": account, "n": n }),
            )
            .await
            .and_then(decode_rows);
            match answer {
                Ok(records) => Ok((tx, records)),
                Err(e) => Err((tx, e)),
            }
        })
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

    /// Removes the token table, so that reading its changes fails.
    #[cfg(test)]
    pub(crate) async fn break_tokens_for_tests(&self) {
        self.execute("REMOVE TABLE token", json!({}))
            .await
            .expect("the token table is removed");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The plan SurrealDB makes for `sql`, as text.
    async fn plan(store: &Store, sql: &str, params: serde_json::Value) -> String {
        let mut response = super::super::bind_all(store.db.query(format!("{sql} EXPLAIN")), params)
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
